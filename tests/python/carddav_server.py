"""Starts a real CardDAV server for the integration tests, on loopback, with HTTP Basic
authentication, storing in a directory of the test's own. The server logic is the
project's own (Radicale or Xandikos, from PyPI); this script only configures it.

Usage: CARDDAV_PASSWORD=... carddav_server.py radicale|xandikos DIR PORT USER
(the password in the environment, never on a command line)

- radicale: Radicale 3 with its own htpasswd authentication (SHA-512 crypt, through the
  passlib Radicale already depends on: no extra package) and owner-only rights.
- xandikos: Xandikos' WSGI app behind a minimal Basic-auth WSGI middleware (Xandikos
  itself only offers htpasswd behind TLS); the user's principal is /USER/ with its
  default address book. Served single-threaded: Xandikos' git store is not written
  from two threads here.

Runs until killed. `carddav_server.py xandikos-forget-history COLLECTION_DIR` invalidates
every sync token of a Xandikos collection (see the function).

The server runs until killed. Prints nothing on success; the test polls the port for readiness."""
import base64
import hmac
import io
import os
import sys


def radicale(root, port, user, password):
    from passlib.hash import sha512_crypt

    os.makedirs(root, exist_ok=True)
    htpasswd = os.path.join(root, "htpasswd")
    with open(htpasswd, "w") as f:
        f.write(f"{user}:{sha512_crypt.hash(password)}\n")
    config = os.path.join(root, "radicale.conf")
    with open(config, "w") as f:
        f.write(
            f"""[server]
hosts = 127.0.0.1:{port}
[auth]
type = htpasswd
htpasswd_filename = {htpasswd}
htpasswd_encryption = sha512
# No delay after a wrong password: the tests send one on purpose.
delay = 0
# Checking a SHA-512 crypt hash costs a good part of a second on a busy machine; Radicale
# can remember a login that succeeded.
cache_logins = True
[rights]
type = owner_only
[storage]
filesystem_folder = {os.path.join(root, "collections")}
[logging]
level = warning
mask_passwords = True
"""
        )
    from radicale.__main__ import run

    sys.argv = ["radicale", "--config", config]
    run()


def basic_auth(app, user, password):
    """A WSGI middleware that lets through only `user` with `password`."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def wrapped(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            start_response(
                "401 Unauthorized",
                [
                    ("WWW-Authenticate", 'Basic realm="xandikos"'),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", "13"),
                ],
            )
            return [b"unauthorized\n"]
        environ["REMOTE_USER"] = user
        # Xandikos reads the body to its end; wsgiref's input is the socket, which does
        # not end on a kept-alive connection: hand it exactly Content-Length bytes.
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(length))
        return app(environ, start_response)

    return wrapped


def xandikos(root, port, user, password):
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from xandikos.web import SingleUserFilesystemBackend, XandikosApp

    principal = f"/{user}/"
    os.makedirs(root, exist_ok=True)
    backend = SingleUserFilesystemBackend(os.path.abspath(root))
    backend._mark_as_principal(principal)
    if not backend.get_resource(principal):
        backend.create_principal(principal, create_defaults=True)
    app = XandikosApp(backend, current_user_principal=principal)

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Server(WSGIServer):
        request_queue_size = 128

    server = make_server(
        "127.0.0.1",
        port,
        basic_auth(app.handle_wsgi_request, user, password),
        server_class=Server,
        handler_class=Quiet,
    )
    server.serve_forever()


def xandikos_forget_history(collection):
    """Rewrites a Xandikos collection's git history to one fresh commit of the same
    files, with the old objects gone: every sync token Xandikos gave (a tree of that
    history) becomes one it does not know, as after a history rewrite or a restore."""
    import shutil

    from dulwich import porcelain

    shutil.rmtree(os.path.join(collection, ".git"))
    porcelain.init(collection)
    names = [n for n in os.listdir(collection) if n != ".git"]
    # dulwich reads relative paths against the working directory.
    os.chdir(collection)
    porcelain.add(".", paths=names)
    porcelain.commit(
        ".",
        message=b"history forgotten by the contacts-etl tests",
        author=b"tests <tests@example.org>",
        committer=b"tests <tests@example.org>",
    )


if __name__ == "__main__":
    if sys.argv[1] == "xandikos-forget-history":
        xandikos_forget_history(sys.argv[2])
        sys.exit(0)
    kind, root, port, user = sys.argv[1:5]
    password = os.environ["CARDDAV_PASSWORD"]
    {"radicale": radicale, "xandikos": xandikos}[kind](root, int(port), user, password)
