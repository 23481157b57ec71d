"""A black-box encoder behind HTTP (``leakprobe serve`` or any service speaking its protocol).

The client batches images, retries transient failures (connection errors, timeouts, 429 and
5xx answers) with exponential backoff, honours ``Retry-After``, stops at once when the
server's budget is exhausted (403), counts its queries, and checks every answer (shape,
embedding size, NaN). Images travel losslessly as base64 float32 ``.npy`` by default, so an
audit through a server gives the same numbers as against the local model file.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import torch

from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.serving.wire import decode_npy, encode_npy, encode_png
from leakprobe.targets.encoder import QueryCounter, check_images, resize

TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class HTTPEncoder:
    """:class:`~leakprobe.targets.encoder.Encoder` for a URL.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:8080``.
        batch_size: images per request (capped by the server's ``max_batch``).
        timeout: seconds per request.
        retries: attempts after the first for transient failures.
        backoff: first retry delay in seconds (doubled each time).
        encoding: ``npy`` (lossless float32) or ``png`` (8-bit).
        budget: local query budget on top of the server's.
        image_size: override the server's declared input size.
    """

    kind = "encoder"

    def __init__(
        self,
        url: str,
        batch_size: int = 64,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        encoding: str = "npy",
        budget: int | None = None,
        image_size: int | None = None,
    ) -> None:
        if encoding not in ("npy", "png"):
            raise LeakprobeError(f"encoding must be 'npy' or 'png', got {encoding!r}")
        self.url = url.rstrip("/")
        self.name = self.url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.encoding = encoding
        self.counter = QueryCounter(budget)
        self.device = torch.device("cpu")
        self.client = httpx.Client(timeout=timeout)
        info = self._request("GET", "/v1/info")
        if info.get("kind") != self.kind:
            raise LeakprobeError(f"{self.url} serves a {info.get('kind')!r}, not a {self.kind}")
        self.info = info
        self.input_size = int(image_size or info.get("input_size") or 32)
        self.embed_dim = int(info.get("embed_dim") or 0)
        self.has_tokens = bool(info.get("tokens"))
        declared = info.get("tokens_in_embedding_space")  # see ModuleEncoder; None: undeclared
        self.tokens_in_embedding_space = declared if isinstance(declared, bool) else None
        self.batch_size = max(1, min(batch_size, int(info.get("max_batch") or batch_size)))
        self.server_queries_used = int(info.get("queries_used") or 0)

    @property
    def queries(self) -> int:
        return self.counter.used

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            try:
                resp = self.client.request(method, self.url + path, json=payload)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()
                    except ValueError as e:
                        raise LeakprobeError(f"{self.url}{path}: answer is not JSON") from e
                message = _error_message(resp)
                if resp.status_code == 403:
                    raise BudgetExceededError(f"{self.url}: {message}")
                if resp.status_code not in TRANSIENT_STATUS:
                    raise LeakprobeError(f"{self.url}{path}: HTTP {resp.status_code}: {message}")
                last = f"HTTP {resp.status_code}: {message}"
                delay = max(delay, _retry_after(resp))
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise LeakprobeError(f"{self.url}{path}: failed after {self.retries + 1} attempts "
                             f"({last})")

    def _payload(self, chunk: torch.Tensor, tokens: bool) -> dict:
        if self.encoding == "npy":
            return {"array": encode_npy(chunk), "tokens": tokens, "response_encoding": "npy"}
        return {"images": [encode_png(x) for x in chunk], "tokens": tokens}

    def _query(self, images: torch.Tensor, tokens: bool) -> list[dict]:
        check_images(images)
        self.counter.charge(images.shape[0])
        answers = []
        for chunk in images.float().split(self.batch_size):
            answer = self._request("POST", "/v1/embed", self._payload(chunk, tokens))
            self.server_queries_used = int(answer.get("queries_used", 0))
            answers.append((chunk.shape[0], answer))
        return answers

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        out = [self._check(_field(a, "embeddings"), n, 2, "embeddings")
               for n, a in self._query(images, False)]
        return torch.cat(out)

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        if not self.has_tokens:
            return None
        out = [self._check(_field(a, "tokens"), n, 3, "tokens")
               for n, a in self._query(images, True)]
        return torch.cat(out)

    def _check(self, value: object, n: int, ndim: int, what: str) -> torch.Tensor:
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise LeakprobeError(f"{self.url}: {what} in the answer are not numbers") from e
        if arr.ndim != ndim or arr.shape[0] != n:
            raise LeakprobeError(f"{self.url}: expected {n} {what} of {ndim} dims, got "
                                 f"shape {arr.shape}")
        if what == "embeddings" and self.embed_dim and arr.shape[1] != self.embed_dim:
            raise LeakprobeError(f"{self.url}: embeddings of size {arr.shape[1]}, the server "
                                 f"declared {self.embed_dim}")
        if not np.isfinite(arr).all():
            raise LeakprobeError(f"{self.url}: the answer contains NaN/inf {what}")
        return torch.from_numpy(arr)


def _field(answer: dict, name: str) -> object:
    """``name`` from an answer, decoding the ``name_npy`` form when the server sent it."""
    if answer.get(f"{name}_npy") is not None:
        return decode_npy(answer[f"{name}_npy"])
    return answer.get(name)


def _error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text[:200]))
    except ValueError:
        return resp.text[:200]


def _retry_after(resp: httpx.Response) -> float:
    """The server's ``Retry-After`` in seconds (0 when absent or not a number)."""
    try:
        return float(resp.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


class HTTPTranslator(HTTPEncoder):
    """:class:`~leakprobe.targets.image2image.ImageToImage` behind ``/v1/translate``."""

    kind = "image2image"

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        self.counter.charge(images.shape[0])
        outs = []
        for chunk in images.float().split(self.batch_size):
            answer = self._request("POST", "/v1/translate", {"array": encode_npy(chunk)})
            self.server_queries_used = int(answer.get("queries_used", 0))
            out = self._check(_field(answer, "outputs"), chunk.shape[0], 4, "outputs")
            if out.min() < 0 or out.max() > 1:
                raise LeakprobeError(f"{self.url}: outputs outside [0, 1]")
            outs.append(out)
        return torch.cat(outs)


class HTTPCaptioner(HTTPEncoder):
    """:class:`~leakprobe.targets.captioner.Captioner` behind ``/v1/caption`` (a black box).

    Queries are resized to the server's ``input_size`` before they are sent (as the local
    targets do), counted, and every answer is checked to hold one string per image.
    """

    kind = "captioner"

    def caption(self, images: torch.Tensor) -> list[str]:
        """One caption per image, from the service in batches."""
        check_images(images)
        images = resize(images.float(), self.input_size)
        self.counter.charge(images.shape[0])
        captions: list[str] = []
        for chunk in images.split(self.batch_size):
            payload = ({"array": encode_npy(chunk)} if self.encoding == "npy"
                       else {"images": [encode_png(x) for x in chunk]})
            answer = self._request("POST", "/v1/caption", payload)
            self.server_queries_used = int(answer.get("queries_used", 0))
            out = answer.get("captions")
            if (not isinstance(out, list) or len(out) != chunk.shape[0]
                    or not all(isinstance(c, str) for c in out)):
                got = f"a list of {len(out)}" if isinstance(out, list) else type(out).__name__
                raise LeakprobeError(f"{self.url}: expected {chunk.shape[0]} captions "
                                     f"(strings), got {got}")
            captions += out
        return captions
