//! The one paging guard every provider's pull loop asks before it follows a page: a
//! server that keeps handing out further pages (a link or token it sent before, more
//! pages than the read can need, page after empty page) is stopped, not followed for
//! ever. Each provider words the stop for its own protocol from the [`PagingFault`].

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Why a paged read was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingFault {
    /// More pages than the read's bound ([`PageGuard::new`]).
    TooManyPages {
        /// The bound.
        max: usize,
    },
    /// A link or token the server had handed out before in this read: the pages go round.
    Repeated,
    /// This many empty pages in a row, each leading to a further one.
    EmptyPages {
        /// The bound ([`PageGuard::with_max_empty_in_a_row`]).
        max: usize,
    },
}

impl std::fmt::Display for PagingFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PagingFault::TooManyPages { max } => write!(f, "more than {max} pages"),
            PagingFault::Repeated => write!(f, "a page link or token sent before"),
            PagingFault::EmptyPages { max } => write!(f, "{max} empty pages in a row"),
        }
    }
}

impl std::error::Error for PagingFault {}

/// The state of one paged read: pages counted, links or tokens followed, empty pages in
/// a row. Links are kept as 64-bit hashes: a read may take many thousand pages, and a
/// repeat is what matters, not the text.
#[derive(Debug)]
pub struct PageGuard {
    max_pages: usize,
    max_empty_in_a_row: Option<usize>,
    pages: usize,
    empty_in_a_row: usize,
    seen: HashSet<u64>,
    hasher: RandomState,
}

impl PageGuard {
    /// A guard for a read of at most `max_pages` pages.
    pub fn new(max_pages: usize) -> PageGuard {
        PageGuard {
            max_pages,
            max_empty_in_a_row: None,
            pages: 0,
            empty_in_a_row: 0,
            seen: HashSet::new(),
            hasher: RandomState::new(),
        }
    }

    /// This guard, also stopping the read at `max` empty pages in a row.
    pub fn with_max_empty_in_a_row(mut self, max: usize) -> PageGuard {
        self.max_empty_in_a_row = Some(max);
        self
    }

    /// Pages counted so far.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Counts a page about to be read and returns its number (from 1); past the bound,
    /// [`PagingFault::TooManyPages`].
    pub fn page(&mut self) -> Result<usize, PagingFault> {
        self.pages += 1;
        if self.pages > self.max_pages {
            return Err(PagingFault::TooManyPages {
                max: self.max_pages,
            });
        }
        Ok(self.pages)
    }

    /// Records a link or token that leads to a page (the read's first one too, so that
    /// a later page leading back to it is caught); one seen before is
    /// [`PagingFault::Repeated`].
    pub fn follow(&mut self, link: &str) -> Result<(), PagingFault> {
        if self.seen.insert(self.hasher.hash_one(link)) {
            Ok(())
        } else {
            Err(PagingFault::Repeated)
        }
    }

    /// Records how many records a page that leads further held; the bound of empty
    /// pages in a row reached is [`PagingFault::EmptyPages`].
    pub fn records(&mut self, records: usize) -> Result<(), PagingFault> {
        self.empty_in_a_row = if records == 0 {
            self.empty_in_a_row + 1
        } else {
            0
        };
        match self.max_empty_in_a_row {
            Some(max) if self.empty_in_a_row >= max => Err(PagingFault::EmptyPages { max }),
            _ => Ok(()),
        }
    }

    /// Starts the read over (the same bound of pages, counted on): the links followed
    /// and the empty pages in a row are forgotten.
    pub fn restart(&mut self) {
        self.seen.clear();
        self.empty_in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each fault at the page it happens, and nothing before it.
    #[test]
    fn the_guard_stops_loops_bounds_and_empty_runs() {
        let mut g = PageGuard::new(3);
        assert_eq!(g.page(), Ok(1));
        assert_eq!(g.page(), Ok(2));
        assert_eq!(g.page(), Ok(3));
        assert_eq!(g.page(), Err(PagingFault::TooManyPages { max: 3 }));

        let mut g = PageGuard::new(10);
        g.follow("a").unwrap();
        g.follow("b").unwrap();
        assert_eq!(g.follow("a"), Err(PagingFault::Repeated));
        g.restart();
        assert_eq!(g.follow("a"), Ok(()), "a restart forgets the links");

        let mut g = PageGuard::new(10).with_max_empty_in_a_row(2);
        g.records(0).unwrap();
        g.records(5).unwrap();
        g.records(0).unwrap();
        assert_eq!(g.records(0), Err(PagingFault::EmptyPages { max: 2 }));
        g.restart();
        g.records(0).unwrap();
        assert_eq!(
            PageGuard::new(1).records(0),
            Ok(()),
            "no bound unless asked"
        );
    }
}
