"""`bertqa serve`: a local web page and JSON API over the pushed models, to try a version before it ships.

    bertqa serve [--runs-dir runs] [--pipeline-name bertqa] [--port 8765] [--host 127.0.0.1]
                 [--data data/sample/eval.json] [--interpreters 2] [--threads 1]

Serves `<runs-dir>/<pipeline-name>/serving/<version>/model.tflite` in LiteRT, as an app runs it
(bertqa_cli.serve_models: the app's tokenizer, windows, signatures and span decoding):

    GET  /                 the page (bertqa_cli.serve_page): a context from --data's paragraphs or
                           your own text, a question, the answer highlighted in the context with its
                           score, milliseconds and version, and a second version answering beside it
                           (by default the newest pushed version and the one pushed before it)
    GET  /api/versions     the pushed versions, newest first, each with the one before it
    GET  /api/contexts     --data's paragraphs and their questions (SQuAD JSON; the eval split by default)
    POST /api/answer       {"context": str, "question": str, "version"?: str, "top_k"?: int} ->
                           {"version", "answers": [{"text", "start", "end", "score"}], "milliseconds",
                            "queued_milliseconds"}; start and end are code-point offsets into the context

Every refusal is a JSON object {"error": "one line"} with a 4xx status (the request's fault) or
5xx (the server's: a version whose model.tflite is damaged, a full queue), and the server goes
on serving. The limits (MAX_CONTEXT_CHARS, ...) and the statuses are in docs/serve.md.

The web server is aiohttp's (already in requirements.lock). The standard library's
http.server would also do, but it gives a thread to every connection, has no limit on a request
body and no clean shutdown; aiohttp caps the body (`client_max_size`), parses HTTP/1.1 and
keep-alive properly, holds slow clients without threads, and stops cleanly. Inference is blocking
work: it runs in a thread pool, each thread holding one of a version's interpreters.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time

from aiohttp import web

from bertqa_cli import serve_page
from bertqa_cli.serve_models import MAX_TOP_K, ModelUnavailable, PushedVersions, VersionNotFound
from pipeline import options

_LOG = logging.getLogger(__name__)

# A context of 20,000 characters is about 4,500 WordPieces: some 35 windows of 384 tokens (stride
# 128), about a second of one core with the default model; longer texts belong in a batch job.
MAX_CONTEXT_CHARS = 20_000
# The model reads at most 64 question tokens (litert_answerer.QUERY_LEN); 1,000 characters is ample.
MAX_QUESTION_CHARS = 1_000
# The largest valid request: both texts at their limits, every character escaped as \\uXXXX\\uXXXX.
MAX_BODY_BYTES = 12 * (MAX_CONTEXT_CHARS + MAX_QUESTION_CHARS) + 4096
# Questions waiting or being answered at once; more are refused (503) rather than queued without end.
MAX_PENDING = 64
FIELDS = ("context", "question", "version", "top_k")
DEFAULT_PORT = 8765
DEFAULT_DATA = os.path.join("data", "sample", "eval.json")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    runs_dir: str = "runs"
    pipeline_name: str = "bertqa"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    data: str | None = None  # SQuAD JSON whose paragraphs the page offers (the command's default: DEFAULT_DATA)
    interpreters: int = 2  # per version
    threads: int = 1  # per interpreter
    max_pending: int = MAX_PENDING
    access_log: bool = True

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.runs_dir, self.pipeline_name, "serving")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": " ".join(message.split())}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler):
    """Every failure as {"error": one line}: ours (ApiError), aiohttp's (404, 405, 413) and the unexpected (500)."""
    try:
        return await handler(request)
    except ApiError as error:
        return _error(error.status, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if isinstance(error, web.HTTPRequestEntityTooLarge):
            return _error(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
        if isinstance(error, web.HTTPNotFound):
            return _error(404, f"nothing at {request.path} (the API: GET /api/versions, POST /api/answer)")
        return _error(error.status, f"{request.method} {request.path}: {error.reason}")
    except Exception as error:  # noqa: BLE001 (the server goes on serving; the traceback is logged)
        _LOG.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(error).__name__}: {error}")


def contexts_from(path: str | None) -> list[dict]:
    """The paragraphs of a SQuAD JSON file, [{"title", "context", "questions"}], those within the limit."""
    if not path:
        return []
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    paragraphs = []
    for article in document.get("data", []):
        for paragraph in article.get("paragraphs", []):
            context = paragraph.get("context", "")
            if context and len(context) <= MAX_CONTEXT_CHARS:
                paragraphs.append({"title": str(article.get("title", "")).replace("_", " "), "context": context,
                                   "questions": [qa["question"] for qa in paragraph.get("qas", [])
                                                 if isinstance(qa.get("question"), str)]})
    return paragraphs


def parse_answer_request(body: bytes) -> dict:
    """The checked fields of a POST /api/answer body; ApiError (400 or 413) naming the first problem."""
    try:
        request = json.loads(body)
    except ValueError as error:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(request, dict):
        raise ApiError(400, f"the body must be a JSON object with {FIELDS[0]!r} and {FIELDS[1]!r}, "
                            f"not a {type(request).__name__}")
    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}")
    for name, limit in (("context", MAX_CONTEXT_CHARS), ("question", MAX_QUESTION_CHARS)):
        if name not in request:
            raise ApiError(400, f"missing field {name!r}")
        if not isinstance(request[name], str):
            raise ApiError(400, f"{name!r} must be a string, not {type(request[name]).__name__}")
        if not request[name].strip():
            raise ApiError(400, f"{name!r} is empty")
        if len(request[name]) > limit:
            raise ApiError(413, f"{name!r} has {len(request[name]):,} characters; the limit is {limit:,}")
    version = request.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if version is not None and not isinstance(version, str):
        raise ApiError(400, f"'version' must be a string such as \"1796192316\", not {type(version).__name__}")
    top_k = request.get("top_k", 1)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ApiError(400, f"'top_k' must be an integer from 1 to {MAX_TOP_K}, not {top_k!r}")
    return {"context": request["context"], "question": request["question"], "version": version or None,
            "top_k": top_k}


class _Handlers:
    def __init__(self, config: ServeConfig, versions: PushedVersions, contexts: list[dict]):
        self._config = config
        self._versions = versions
        self._contexts = {"source": config.data, "paragraphs": contexts}
        # Threads that answer: enough for every interpreter of two versions (the page asks two at once).
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=max(4, 2 * config.interpreters),
                                                               thread_name_prefix="bertqa-answer")
        self._pending = 0

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=serve_page.HTML, content_type="text/html", headers=_PAGE_HEADERS)

    async def script(self, request: web.Request) -> web.Response:
        return web.Response(text=serve_page.SCRIPT, content_type="text/javascript", headers=_PAGE_HEADERS)

    async def style(self, request: web.Request) -> web.Response:
        return web.Response(text=serve_page.STYLE, content_type="text/css", headers=_PAGE_HEADERS)

    async def versions(self, request: web.Request) -> web.Response:
        # The default pool, not the answering one: a queue of questions does not hold up the list.
        described = await asyncio.get_running_loop().run_in_executor(None, self._versions.describe)
        return web.json_response(described)

    async def contexts(self, request: web.Request) -> web.Response:
        return web.json_response(self._contexts)

    async def answer(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            # A page of another site cannot send this type without the browser's CORS preflight, which
            # this server never grants: only pages it serves, and programs, can use its CPU.
            raise ApiError(415, f"send the body as JSON with the header Content-Type: application/json, "
                                f"not {request.content_type or 'none'}")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is over {MAX_BODY_BYTES:,} bytes")
        fields = parse_answer_request(await request.read())
        if self._pending >= self._config.max_pending:
            raise ApiError(503, f"busy: {self._pending} questions are waiting or being answered; ask again shortly")
        self._pending += 1
        try:
            timed = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._versions.answer, fields["version"], fields["context"], fields["question"],
                fields["top_k"], time.perf_counter())
        except VersionNotFound as error:
            raise ApiError(404, str(error)) from None
        except ModelUnavailable as error:
            raise ApiError(500, str(error)) from None
        finally:
            self._pending -= 1
        return web.json_response({
            "version": timed.version,
            "answers": [{"text": a.text, "start": a.start, "end": a.end, "score": round(a.score, 4)}
                        for a in timed.answers],
            "milliseconds": round(timed.milliseconds, 1),
            "queued_milliseconds": round(timed.queued_milliseconds, 1),
        })

    async def close(self, app: web.Application) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._versions.close()


# The page loads only its own script and style (no inline code), and nothing from elsewhere.
_PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def make_app(config: ServeConfig) -> web.Application:
    """The aiohttp application; the versions are read from config.serving_dir at each request."""
    handlers = _Handlers(config, PushedVersions(config.serving_dir, config.interpreters, config.threads),
                         contexts_from(config.data))
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_json_errors])
    app.router.add_get("/", handlers.page)
    app.router.add_get("/page.js", handlers.script)
    app.router.add_get("/page.css", handlers.style)
    app.router.add_get("/api/versions", handlers.versions)
    app.router.add_get("/api/contexts", handlers.contexts)
    app.router.add_post("/api/answer", handlers.answer)
    app.on_cleanup.append(handlers.close)
    return app


async def _start(config: ServeConfig) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(config), access_log=logging.getLogger("aiohttp.access") if config.access_log
                           else None, access_log_format='%a "%r" %s %Tfs')
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host if ':' not in host else f'[{host}]'}:{port}/"


class BackgroundServer:
    """The server on its own event loop in a thread, for tests and scripts: `with BackgroundServer(config) as url:`."""

    def __init__(self, config: ServeConfig):
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bertqa-serve", daemon=True)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None

    def start(self) -> str:
        self._thread.start()
        self._runner, self.url = asyncio.run_coroutine_threadsafe(_start(self._config), self._loop).result(120)
        return self.url

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(120)
            self._runner = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


async def _serve_until_stopped(config: ServeConfig) -> None:
    runner, url = await _start(config)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM"):
        loop.add_signal_handler(getattr(signal, name), stopped.set)
    print(f"bertqa serve: {url} (versions in {config.serving_dir}; Ctrl-C stops)", flush=True)
    try:
        await stopped.wait()
    finally:
        await runner.cleanup()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertqa serve", description=__doc__.split("\n\nThe web server")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs", help="the runs directory (default runs)")
    parser.add_argument("--pipeline-name", default="bertqa", help="its pipeline (default bertqa): the versions are "
                                                                  "in RUNS_DIR/PIPELINE_NAME/serving/")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free port")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address to listen on (default 127.0.0.1, this machine only; the server has no "
                             "authentication)")
    parser.add_argument("--data", default=None,
                        help=f"SQuAD JSON whose paragraphs the page offers (default {DEFAULT_DATA} when it exists)")
    parser.add_argument("--interpreters", type=options.positive_int, default=2,
                        help="LiteRT interpreters per version at most, each answering one question at a time "
                             "(default 2, made as concurrent questions need them)")
    parser.add_argument("--threads", type=options.positive_int, default=1,
                        help="CPU threads of each interpreter (default 1)")
    parser.add_argument("--max-pending", type=options.positive_int, default=MAX_PENDING,
                        help=f"questions waiting or being answered at once; more get 503 (default {MAX_PENDING})")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # As the runners: TensorFlow's first import (with the first version asked) drops its duplicate CUDA lines.
    from pipeline import quiet_startup  # noqa: F401
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    for name in ("aiohttp.access", "bertqa_cli"):  # each request, and each version loaded
        logging.getLogger(name).setLevel(logging.INFO)
    data = args.data
    if data is None:
        data = DEFAULT_DATA if os.path.exists(DEFAULT_DATA) else None
    try:
        contexts_from(data)
    except (OSError, ValueError) as error:
        print(f"error: --data {data}: {error}", file=sys.stderr)
        return 2
    config = ServeConfig(runs_dir=args.runs_dir, pipeline_name=args.pipeline_name, host=args.host, port=args.port,
                         data=data, interpreters=args.interpreters, threads=args.threads,
                         max_pending=args.max_pending)
    if not os.path.isdir(config.serving_dir):
        print(f"warning: {config.serving_dir} does not exist yet; versions pushed there will show up",
              file=sys.stderr)
    if not _is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who reaches this port can run the models "
              "(no authentication)", file=sys.stderr)
    try:
        asyncio.run(_serve_until_stopped(config))
    except OSError as error:  # the port is taken, or the address is not this machine's
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
