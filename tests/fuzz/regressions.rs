//! Every crashing input the fuzz targets found, as a test that fails on the code before
//! its fix. Inputs too long for a literal are files under `tests/fuzz/regressions/`.
