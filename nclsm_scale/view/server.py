"""The viewer's HTTP server: the page, its static files, tiles and a small JSON API over :class:`RunView`.

Routes (slide names URL-encoded; ``x``, ``y`` level-0 pixels, column and row)::

    GET  /                                   -> the first slide's page
    GET  /slide/<slide>                      the viewer page (OpenSeadragon)
    GET  /static/<file>                      the page's script, style and OpenSeadragon
    GET  /tiles/<slide>/<layer>/<level>/<tx>_<ty>.png   (.jpg: the image layer as JPEG)
                                             layer image (?channels=0,1), fibres
                                             (?hide=FR,EDGE&hide_reasons=NTM&fill=48) or folds; level 0 finest
    GET  /api/slides                         {"slides": [...]}
    GET  /api/<slide>/info                   levels, channels, classes with counts, the slide's statistics
    GET  /api/<slide>/summary                the slide's row of tables/slides.parquet
    GET  /api/<slide>/fibre?x=&y=            {"fibre": row of the fibre table, or null on background}
    POST /api/<slide>/class                  {"fibre_id": 12, "class": "FR", "reasons": "FR;EDGE"}; class null
                                             forgets the override
    POST /api/reaggregate                    {} (the edited slides) or {"slides": [...]}

Errors answer JSON ``{"error": "..."}``: 404 for an unknown slide, level, tile or
route, 400 for a bad parameter, 500 (logged) for anything unexpected.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from nclsm_scale.errors import NclsmError
from nclsm_scale.view.run_view import NotFoundError, RunView, hidden_codes

__all__ = ["STATIC", "ViewServer", "make_server"]

logger = logging.getLogger(__name__)

#: Folder of the page's files (``viewer.html``, ``viewer.js``, ``viewer.css``, ``openseadragon/``).
STATIC = Path(str(resources.files("nclsm_scale.view"))) / "static"

_TILE = re.compile(r"^/tiles/([^/]+)/([a-z]+)/(\d+)/(\d+)_(\d+)\.(png|jpg)$")
_API = re.compile(r"^/api/([^/]+)/(info|summary|fibre|class)$")
_MAX_BODY = 1 << 16


class ViewServer(ThreadingHTTPServer):
    """A threading HTTP server that holds the :class:`RunView` its handlers answer from."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: RunView) -> None:
        super().__init__(address, _Handler)
        self.view = view

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host, port = self.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"


def make_server(view: RunView, host: str, port: int) -> ViewServer:
    """A :class:`ViewServer` bound to ``host:port`` (port 0: a free one); call ``serve_forever`` on it."""
    return ViewServer((host, port), view)


def _query_int(query: dict[str, list[str]], key: str) -> int:
    try:
        return int(query[key][0])
    except (KeyError, IndexError, ValueError):
        raise _BadRequest(f"query parameter {key!r} must be an integer") from None


class _BadRequest(NclsmError):
    """A malformed request (HTTP 400)."""


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- answers --------------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, cache: str = "no-cache") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, allow_nan=False, default=str).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _static(self, rel: str) -> None:
        path = (STATIC / rel).resolve()
        if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
            raise NotFoundError(f"no static file {rel!r}")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), ctype, "max-age=3600")

    # -- dispatch -------------------------------------------------------------------------------------------------

    def _dispatch(self, handler: Any) -> None:
        try:
            handler()
        except NotFoundError as exc:
            self._error(404, str(exc))
        except NclsmError as exc:
            self._error(400, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug: log it, answer 500, keep serving
            logger.exception("%s %s failed", self.command, self.path)
            self._error(500, f"{type(exc).__name__}: {exc}")

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch(self._post)

    def _get(self) -> None:
        view = self.server.view
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        if path == "/":
            names = view.slide_names()
            if not names:
                raise NotFoundError(f"{view.layout.root}: no slide with a store and a fibre table")
            self._redirect(f"/slide/{names[0]}")
        elif path.startswith("/slide/"):
            view.slide(unquote(path.removeprefix("/slide/")))
            self._static("viewer.html")
        elif path.startswith("/static/"):
            self._static(unquote(path.removeprefix("/static/")))
        elif path == "/api/slides":
            self._json({"slides": view.slide_names()})
        elif m := _TILE.match(path):
            name, layer, level, tx, ty = unquote(m[1]), m[2], int(m[3]), int(m[4]), int(m[5])
            if m[6] == "jpg" and layer != "image":
                raise NotFoundError(f"the {layer} layer is served as PNG only")
            channels = None
            if "channels" in query:
                try:
                    channels = [int(c) for c in query["channels"][0].split(",") if c.strip()]
                except ValueError:
                    raise _BadRequest("channels must be comma-separated channel indices") from None
            png = view.tile(name, layer, level, tx, ty, channels=channels,
                            hide=hidden_codes(query.get("hide", [""])[0]),
                            hide_reasons=hidden_codes(query.get("hide_reasons", [""])[0]),
                            fill_alpha=_query_int(query, "fill") if "fill" in query else 0,
                            fmt="jpeg" if m[6] == "jpg" else "png")
            ctype = "image/jpeg" if m[6] == "jpg" else "image/png"
            self._send(200, png, ctype, "max-age=86400" if layer == "image" else "no-cache")
        elif (m := _API.match(path)) and m[2] != "class":
            name, what = unquote(m[1]), m[2]
            if what == "info":
                self._json(view.info(name))
            elif what == "summary":
                self._json(view.summary(name))
            else:
                self._json({"fibre": view.fibre_at(name, _query_int(query, "x"), _query_int(query, "y"))})
        else:
            raise NotFoundError(f"no such page: {path}")

    def _body(self) -> dict[str, Any]:
        size = int(self.headers.get("Content-Length") or 0)
        if size > _MAX_BODY:
            raise _BadRequest(f"request body over {_MAX_BODY} bytes")
        try:
            data = json.loads(self.rfile.read(size) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _BadRequest(f"request body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _BadRequest("request body must be a JSON object")
        return data

    def _post(self) -> None:
        view = self.server.view
        path = urlsplit(self.path).path
        body = self._body()
        if path == "/api/reaggregate":
            slides = body.get("slides")
            self._json(view.reaggregate(None if slides is None else [str(s) for s in slides]))
        elif (m := _API.match(path)) and m[2] == "class":
            if "fibre_id" not in body or "class" not in body:
                raise _BadRequest('body needs "fibre_id" and "class" (null forgets the override)')
            try:
                fibre_id = int(body["fibre_id"])
            except (TypeError, ValueError):
                raise _BadRequest(f"fibre_id must be an integer, got {body['fibre_id']!r}") from None
            code = body["class"]
            reasons = body.get("reasons")
            self._json(view.set_class(unquote(m[1]), fibre_id, None if code is None else str(code),
                                      None if reasons is None else str(reasons)))
        else:
            raise NotFoundError(f"no such action: {path}")
