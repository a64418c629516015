"""The HTTP API of `llmcf serve` (FastAPI on uvicorn; OpenAPI docs at /docs).

    POST /v1/score          user (optional), history, candidates -> a score per candidate (+ the top k)
    POST /v1/explain        one (user, candidate) -> retrieved examples, their CoTs and labels, attention shares
    GET  /healthz           liveness
    GET  /v1/info           model, bank size, metrics, limits; with the admin token also the run path, software
                            versions, warnings and the last reload error
    POST /v1/admin/reload   swap in what the offline stage wrote last (header ``Authorization: Bearer <token>``,
                            token from $LLMCF_ADMIN_TOKEN; disabled (503) when that is unset; see ``auth.py``)

Errors (every one declared in the OpenAPI document with its body model): a malformed body is a 422
(``ValidationErrorBody``); an oversized one (``serve.max_body_bytes``, ``serve.max_candidates``, ``serve.max_history``)
a 413, a body that is not UTF-8 JSON or explanations asked of a backbone without the ICT a 400, a missing/malformed admin token a 401, a wrong one a 403,
too many wrong ones a 429, a failed reload a 409, admin disabled a 503; each with a message in ``detail``
(``ErrorBody``). Refresh: a new Scorer is built beside the serving one and swapped in under a lock; requests in flight
finish on the one they started with, so none is dropped. With ``serve.watch_seconds > 0`` a thread polls the
model's and the bank's files and reloads after they have stopped changing.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pydantic import BaseModel, Field

from llmcf.config import Config, ServeConfig
from llmcf.errors import LLMCFError
from llmcf.serve.auth import AdminAuth
from llmcf.serve.schemas import CandidateScore, ErrorBody, ExplainRequest, ExplainResponse, ForgetRequest, \
    HistoryInfo, PublicInfo, ScoreRequest, ScoreResponse, ValidationErrorBody
from llmcf.serve.scorer import Scorer

TOKEN_ENV = "LLMCF_ADMIN_TOKEN"
ATTENTION_NOTE = ("last decoder layer, mean over heads, attention of the query's features token (the last position) "
                  "over the input tokens; the example shares and query_attention sum to 1")
log = logging.getLogger("llmcf.serve")


class ScorerSlot:
    """The serving Scorer, swapped atomically. ``current`` is read once per request; ``reload`` builds the new
    Scorer outside the lock (slow) and only the reference swap happens under it."""

    def __init__(self, scorer: Scorer):
        self._scorer = scorer
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.reloads = 0
        self.last_error: str | None = None
        self.forgetting: set[str] = set()
        """Users of a forget in progress: their bank rows are blocked in every scorer loaded until it finishes."""

    @property
    def current(self) -> Scorer:
        with self._lock:
            return self._scorer

    def reload(self) -> tuple[Scorer, float]:
        """(new scorer, seconds); raises what loading raised and keeps serving the old one then."""
        with self._reload_lock:  # one reload at a time
            t0 = time.perf_counter()
            try:
                new = self.current.reload()
                if self.forgetting:
                    new.forget_now(sorted(self.forgetting))
            except Exception as e:  # keep serving the old model; report why
                self.last_error = f"{type(e).__name__}: {e}"
                raise
            with self._lock:
                self._scorer = new
                self.reloads += 1
                self.last_error = None
            return new, time.perf_counter() - t0


class _Watcher(threading.Thread):
    """Polls ``Scorer.fingerprint`` every ``interval`` s; reloads once a changed fingerprint is seen twice in a row
    (files written by a stage in progress are left alone until they settle)."""

    def __init__(self, slot: ScorerSlot, interval: float):
        super().__init__(daemon=True, name="llmcf-serve-watch")
        self.slot, self.interval, self.stop = slot, interval, threading.Event()

    def run(self) -> None:
        seen = self.slot.current.loaded_fingerprint
        pending = None
        while not self.stop.wait(self.interval):
            try:
                fp = self.slot.current.fingerprint()
                if fp == seen:
                    pending = None
                    continue
                if fp != pending:
                    pending = fp
                    continue
                new, secs = self.slot.reload()
                seen, pending = new.loaded_fingerprint, None
                log.info("file watch: reloaded %s in %.2fs", new.version, secs)
            except Exception as e:  # noqa: BLE001 - the old model keeps serving
                log.warning("file watch: reload failed, still serving the previous model: %s", e)
                seen = pending or seen
                pending = None


class _BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets a 413 before any parsing."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(scope, send, int(declared))
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                return await self._too_large(scope, send, size)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, scope, send, size: int):
        resp = JSONResponse(status_code=413, content={
            "detail": f"request body of {size}+ bytes exceeds the limit of {self.max_bytes} bytes "
                      "(serve.max_body_bytes)"})
        await resp(scope, None, send)


ADMIN_ONLY = ("run_dir", "versions", "warnings", "last_reload_error")
"""/v1/info fields shown only with the admin token: paths, software versions, and the messages that may hold them."""
ERROR_TEXT = {400: "a body that is not UTF-8 JSON, or an explanation asked of a model without the ICT", 401: "missing or malformed admin token (see the "
              "WWW-Authenticate header)", 403: "wrong admin token", 409: "reload failed; the previous model keeps "
              "serving", 413: "request too large (body bytes, candidates or history)", 429: "too many wrong admin "
              "tokens from this client (see Retry-After)", 503: "admin requests disabled (no token configured)"}


def declared(*codes: int) -> dict:
    """OpenAPI ``responses`` for these status codes, each with the ErrorBody model, plus the 422 body."""
    out: dict = {c: {"model": ErrorBody, "description": ERROR_TEXT[c]} for c in codes}
    out[422] = {"model": ValidationErrorBody, "description": "the request does not match its schema"}
    return out


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


class ReloadResponse(BaseModel):
    status: str
    previous: str
    version: str
    seconds: float
    changed: bool
    bank_rows: int | None = None


def _check_sizes(req, settings: ServeConfig, n_candidates: int) -> None:
    if n_candidates > settings.max_candidates:
        raise HTTPException(413, f"candidates: {n_candidates} items, the limit is {settings.max_candidates} per "
                                 "request (serve.max_candidates)")
    if len(req.history) > settings.max_history:
        raise HTTPException(413, f"history: {len(req.history)} items, the limit is {settings.max_history} "
                                 "(serve.max_history; the model reads only the last data.history_len)")


def _candidates(res, idx) -> list[CandidateScore]:
    return [CandidateScore(item_id=res.items[i], score=float(res.scores[i]), known=bool(res.known[i]),
                           text=None if res.text is None else bool(res.text[i])) for i in idx]


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _json(body) -> Response:
    """The response model as JSON, built once here: FastAPI would validate it again in a second thread hop."""
    return Response(body.model_dump_json(), media_type="application/json")


def create_app(scorer: Scorer, settings: ServeConfig | None = None, admin_token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``scorer``. ``admin_token`` defaults to $LLMCF_ADMIN_TOKEN (read now); when neither
    is set, reload over HTTP is disabled. ``app.state.slot`` holds the swappable scorer."""
    settings = settings or ServeConfig()
    token = (admin_token if admin_token is not None else os.environ.get(TOKEN_ENV)) or None  # '' = disabled
    slot = ScorerSlot(scorer)
    auth = AdminAuth(token, TOKEN_ENV, settings.admin_max_failures, settings.admin_failure_window)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        watcher = None
        if settings.watch_seconds and settings.watch_seconds > 0:
            watcher = _Watcher(slot, float(settings.watch_seconds))
            watcher.start()
        yield
        if watcher is not None:
            watcher.stop.set()
            watcher.join(timeout=5)

    import llmcf

    app = FastAPI(title="llmcf scoring service", version=llmcf.__version__, lifespan=lifespan,
                  description="LLM-CF online scoring: in-context retrieval from the offline CoT bank + the ICT "
                              "module + a CTR backbone. The LLM is never called online.")
    app.state.slot, app.state.settings = slot, settings
    app.add_middleware(_BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        parts = []
        for e in errs[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
            parts.append(f"{loc}: {e.get('msg')}")
        more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
        return JSONResponse(status_code=422, content={"detail": "invalid request: " + "; ".join(parts) + more,
                                                      "errors": [{k: e.get(k) for k in ("loc", "msg", "type")}
                                                                 for e in errs]})

    @app.get("/healthz")
    def healthz() -> dict:
        s = slot.current
        return {"status": "ok", "model": s.tag, "version": s.version}

    @app.get("/v1/info", response_model=PublicInfo, responses=declared(401, 403, 429, 503),
             description="Public view without an Authorization header; with the admin bearer token, the full view "
                         "(also the run path, software versions, warnings, last reload error).")
    def info(request: Request, authorization: str | None = Header(None)) -> Response:
        full = authorization is not None
        if full:
            auth.check(authorization, _client(request))
        s = slot.current
        d = s.info()
        d.update(reloads=slot.reloads, authenticated=full,
                 limits={"max_candidates": settings.max_candidates, "max_history": settings.max_history,
                         "max_body_bytes": settings.max_body_bytes},
                 reload={"http": auth.enabled, "watch_seconds": settings.watch_seconds})
        if full:
            d["versions"].update({"fastapi": fastapi.__version__, "uvicorn": _version("uvicorn")})
            d["last_reload_error"] = slot.last_error
        else:
            d = {k: v for k, v in d.items() if k not in ADMIN_ONLY}
        return _json(PublicInfo(**d))  # pydantic's JSON: NaN metrics become null

    @app.post("/v1/score", response_model=ScoreResponse, responses=declared(400, 413))
    def score(req: ScoreRequest) -> Response:
        _check_sizes(req, settings, len(req.candidates))
        s = slot.current  # this request finishes on this scorer, whatever a reload does meanwhile
        res = s.score(req.candidates, req.history, user=req.user_id, pos=req.pos)
        cands = _candidates(res, range(len(res.items)))
        top = [cands[i] for i in res.top(req.top_k)] if req.top_k else None
        return _json(ScoreResponse(model=s.tag, version=s.version, user_known=res.user_known,
                                   history=HistoryInfo(used=res.history_used, unknown=res.history_unknown,
                                                       truncated=res.history_truncated),
                                   scores=cands, top=top, notes=res.notes))

    @app.post("/v1/explain", response_model=ExplainResponse, responses=declared(400, 413))
    def explain(req: ExplainRequest) -> Response:
        _check_sizes(req, settings, 1)
        s = slot.current
        if not s.ict:
            raise HTTPException(400, f"the served model {s.tag} has no in-context module, so there is nothing to "
                                     f"explain: serve an LLM-CF model (e.g. --model {s.model_name}+llmcf)")
        out = s.explain(req.candidate, req.history, user=req.user_id, pos=req.pos).to_dict(internals=False)
        return _json(ExplainResponse(model=s.tag, version=s.version, attention=ATTENTION_NOTE, **out))

    @app.post("/v1/admin/reload", response_model=ReloadResponse, responses=declared(401, 403, 409, 413, 429, 503))
    def reload(request: Request, authorization: str | None = Header(None)) -> dict:
        auth.check(authorization, _client(request))
        old = slot.current.version
        try:
            new, secs = slot.reload()
        except Exception as e:  # noqa: BLE001 - whatever broke, the previous model keeps serving
            kind = "" if isinstance(e, LLMCFError) else f"{type(e).__name__}: "
            raise HTTPException(409, f"reload failed, still serving {old}: {kind}{e}") from e
        info = {"status": "reloaded", "previous": old, "version": new.version, "seconds": round(secs, 3),
                "changed": new.version != old}
        if new.ict:
            info["bank_rows"] = len(new.bank_frame)
        return info

    @app.post("/v1/admin/forget", status_code=202, responses=declared(400, 401, 403, 409, 413, 429, 503),
              description="Forget users exactly (llmcf forget): their in-context examples stop being returned at once "
                          "(bank rows blocked in the served state); the affected shards are retrained in the "
                          "background and swapped in when ready (GET /v1/admin/forget for the status).")
    def forget_users(req: ForgetRequest, request: Request, authorization: str | None = Header(None)) -> dict:
        auth.check(authorization, _client(request))
        with forget_lock:
            if forget_state.get("status") == "running":
                raise HTTPException(409, "a forget is already running; wait for it (GET /v1/admin/forget)")
            s = slot.current
            with slot._lock:
                slot.forgetting |= set(req.users)
            blocked = s.forget_now(req.users)
            forget_state.clear()
            forget_state.update(status="running", users=len(req.users), bank_rows_blocked=blocked,
                                started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        threading.Thread(target=_forget_job, args=(s.run_dir, list(req.users)), daemon=True,
                         name="llmcf-forget").start()
        return dict(forget_state)

    @app.get("/v1/admin/forget", responses=declared(401, 403, 429, 503))
    def forget_status(request: Request, authorization: str | None = Header(None)) -> dict:
        auth.check(authorization, _client(request))
        return dict(forget_state) or {"status": "idle"}

    forget_lock = threading.Lock()
    forget_state: dict = {}
    app.state.forget_state = forget_state

    def _forget_job(run_dir, users) -> None:
        from llmcf.forget import forget

        try:
            rec = forget(run_dir, users)
            slot.reload()
            forget_state.update(status="done", shards_retrained=rec["shards_retrained"], seconds=rec["seconds"])
        except Exception as e:  # noqa: BLE001 - the blocked rows stay blocked; the journal lets a rerun resume
            log.warning("forget failed (resume with `llmcf forget --run %s --resume`): %s", run_dir, e)
            forget_state.update(status="failed", error=f"{type(e).__name__}: {e}")
            return
        with slot._lock:
            slot.forgetting -= set(users)

    return app


def serve(run_dir: str | Path, cfg: Config, model: str, host: str = "127.0.0.1", port: int = 8000,
          seed: int | None = None, log_level: str = "info") -> None:
    """Load ``model`` (a tag under run_dir/models, e.g. ``DIN`` or ``DIN+llmcf``) and serve it with uvicorn."""
    import torch
    import uvicorn

    if cfg.serve.threads:
        torch.set_num_threads(int(cfg.serve.threads))
    t0 = time.perf_counter()
    from llmcf.serve.ensemble import load_scorer

    scorer = load_scorer(run_dir, model, seed, device=cfg.serve.device)  # an EnsembleScorer for a partitioned run
    for w in scorer.warnings:
        print(f"[serve] warning: {w}")
    bank = f", bank {len(scorer.bank_frame)} rows, K={scorer.retriever.cfg.k}" if scorer.ict else ""
    print(f"[serve] {scorer.version} loaded in {time.perf_counter() - t0:.1f}s{bank}; "
          f"http://{host}:{port}/docs  (reload: {'POST /v1/admin/reload' if os.environ.get(TOKEN_ENV) else 'off'}"
          f"{f', watching files every {cfg.serve.watch_seconds}s' if cfg.serve.watch_seconds else ''})")
    uvicorn.run(create_app(scorer, cfg.serve), host=host, port=port, log_level=log_level,
                timeout_keep_alive=cfg.serve.keep_alive_seconds)
