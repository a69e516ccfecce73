"""Python client for the ICAE services (proto/icae/v1/icae.proto).

    from icae_client import IcaeClient
    with IcaeClient("127.0.0.1:50051", "127.0.0.1:50052") as c:
        slot = c.encode(text=open("doc.txt").read()).slot_id
        for part in c.generate([slot], prompt="Who wrote it?"):
            print(part if isinstance(part, str) else f"\\n[{part.finish_reason}]", end="")

Retry rules (the proto's status table): UNAVAILABLE (draining, loading, store unreachable) is
retried with exponential back-off and jitter, for Encode and for a Generate that has not yet
streamed anything (a stream that already produced text is never replayed); NOT_FOUND on a
slot means it was evicted: `ask` encodes the context again once and retries. Everything else
is raised at once as IcaeError, which carries the gRPC status code.

The stubs are generated from proto/ by the CMake build (scripts/build.sh) into
icae_client/_generated; they are not part of the repository.
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
import time
from typing import Iterator, Optional, Sequence, Union

import grpc

_GENERATED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_generated")
if not os.path.exists(os.path.join(_GENERATED, "icae", "v1", "icae_pb2_grpc.py")):
    raise ImportError(
        "icae_client: the gRPC stubs are missing from " + _GENERATED +
        " (scripts/build.sh generates them from proto/icae/v1/icae.proto)")
# The generated modules import each other as `icae.v1.*`.
if _GENERATED not in sys.path:
    sys.path.insert(0, _GENERATED)
from icae.v1 import icae_pb2 as pb  # noqa: E402
from icae.v1 import icae_pb2_grpc as pb_grpc  # noqa: E402

__all__ = ["IcaeClient", "IcaeError", "Encoded", "Final", "pb"]

MODES = {
    None: pb.MODE_UNSPECIFIED,
    "autoencode": pb.MODE_AUTOENCODE,
    "instruct": pb.MODE_INSTRUCT,
    "continue": pb.MODE_CONTINUE,
    "raw": pb.MODE_RAW,
}


class IcaeError(Exception):
    """A call that failed; `code` is the grpc.StatusCode, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclasses.dataclass(frozen=True)
class Encoded:
    slot_id: str
    token_count: int
    slot_count: int
    segment_count: int
    cached: bool


@dataclasses.dataclass(frozen=True)
class Final:
    """The end of a Generate stream: why it stopped, what it used, and the whole answer."""
    text: str                 # all text deltas joined
    token_ids: list           # all generated token ids
    finish_reason: str        # "EOS", "LENGTH", "STOP_SEQUENCE", "STOP_TOKEN", "CANCELLED"
    stop_sequence: str
    stop_token_id: int
    usage: dict               # slot_count, prompt_tokens, completion_tokens, context_tokens, …
    timings: dict             # queue_seconds, time_to_first_token_seconds, total_seconds
    seed: int
    request_id: str
    reencoded: bool = False   # ask() had to encode the context again (the slot was evicted)


def _message_dict(msg) -> dict:
    return {f.name: getattr(msg, f.name) for f in msg.DESCRIPTOR.fields}


class IcaeClient:
    """Calls one encoder and one decoder (host:port each; a load balancer's address is fine).

    api_key: sent as "authorization: Bearer <key>" (the services' --api_keys_file).
    tls_ca: PEM bytes or a file path of the CA that signed the servers' certificates; None
    means plaintext (the services' loopback default).
    timeout: seconds per call (a gRPC deadline). retries / backoff: UNAVAILABLE handling.
    """

    def __init__(self, encoder: str, decoder: str, api_key: Optional[str] = None,
                 tls_ca: Optional[Union[bytes, str]] = None, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.2, max_backoff: float = 5.0):
        if retries < 0 or backoff < 0 or max_backoff < backoff or timeout <= 0:
            raise ValueError("need retries >= 0, 0 <= backoff <= max_backoff, timeout > 0")
        self._metadata = (("authorization", "Bearer " + api_key),) if api_key else ()
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._channels = [self._channel(encoder, tls_ca), self._channel(decoder, tls_ca)]
        self._encoder = pb_grpc.EncoderStub(self._channels[0])
        self._decoder = pb_grpc.DecoderStub(self._channels[1])

    @staticmethod
    def _channel(address: str, tls_ca):
        if tls_ca is None:
            return grpc.insecure_channel(address)
        if isinstance(tls_ca, str):
            with open(tls_ca, "rb") as f:
                tls_ca = f.read()
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca))

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def __enter__(self) -> "IcaeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- retry policy ------------------------------------------------------------------------

    def _sleep_before_retry(self, attempt: int) -> None:
        delay = min(self._max_backoff, self._backoff * (2 ** attempt))
        time.sleep(delay * (0.5 + random.random() / 2))  # jitter: retries do not synchronise

    def _call(self, fn, request):
        """A unary call with UNAVAILABLE retried; other errors raised as IcaeError."""
        for attempt in range(self._retries + 1):
            try:
                return fn(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE and attempt < self._retries:
                    self._sleep_before_retry(attempt)
                    continue
                raise IcaeError(e.code(), e.details() or "") from None
        raise AssertionError("unreachable")

    # -- the API -----------------------------------------------------------------------------

    def encode(self, text: Optional[Union[str, bytes]] = None,
               ids: Optional[Sequence[int]] = None, request_id: str = "") -> Encoded:
        """Compresses a context (text, or token ids taken as given) into slots in the store."""
        if (text is None) == (ids is None):
            raise ValueError("encode needs exactly one of text= or ids=")
        req = pb.EncodeRequest(request_id=request_id.encode())
        if text is not None:
            req.text = text.encode() if isinstance(text, str) else text
        else:
            req.token_ids.ids.extend(ids)
        r = self._call(self._encoder.Encode, req)
        return Encoded(r.slot_id, r.token_count, r.slot_count, r.segment_count, r.cached)

    def model_info(self, service: str = "decoder") -> dict:
        stub = self._decoder if service == "decoder" else self._encoder
        return _message_dict(self._call(stub.GetModelInfo, pb.GetModelInfoRequest()))

    def generate(self, slot_ids: Sequence[str], prompt: Optional[str] = None,
                 mode: Optional[str] = "instruct", temperature: float = 0.0, top_p: float = 0.0,
                 top_k: int = 0, seed: Optional[int] = None, repetition_penalty: float = 0.0,
                 max_new_tokens: int = 0, stop: Sequence[str] = (),
                 stop_token_ids: Sequence[int] = (), request_id: str = ""
                 ) -> Iterator[Union[str, Final]]:
        """Streams an answer conditioned on slots: text deltas (str), then one Final."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(m for m in MODES if m)}")
        req = pb.GenerateRequest(request_id=request_id.encode(), mode=MODES[mode])
        req.slot_ids.extend(s.encode() for s in slot_ids)
        if prompt is not None:
            req.prompt_text = prompt.encode()
        req.sampling.temperature = temperature
        req.sampling.top_p = top_p
        req.sampling.top_k = top_k
        req.sampling.repetition_penalty = repetition_penalty
        if seed is not None:
            req.sampling.seed = seed
        req.stopping.max_new_tokens = max_new_tokens
        req.stopping.stop_sequences.extend(s.encode() for s in stop)
        req.stopping.stop_token_ids.extend(stop_token_ids)
        return self._stream(req)

    def _stream(self, req) -> Iterator[Union[str, Final]]:
        texts, ids = [], []
        for attempt in range(self._retries + 1):
            started = False
            try:
                for msg in self._decoder.Generate(req, timeout=self._timeout,
                                                  metadata=self._metadata):
                    started = True
                    ids.extend(msg.token_ids)
                    if msg.text:
                        texts.append(msg.text)
                        yield msg.text
                    if msg.HasField("final"):
                        f = msg.final
                        yield Final(
                            text="".join(texts), token_ids=ids,
                            finish_reason=pb.FinishReason.Name(f.finish_reason).replace(
                                "FINISH_REASON_", ""),
                            stop_sequence=f.stop_sequence, stop_token_id=f.stop_token_id,
                            usage=_message_dict(f.usage), timings=_message_dict(f.timings),
                            seed=f.seed, request_id=f.request_id)
                        return
                raise IcaeError(grpc.StatusCode.INTERNAL, "the stream ended without a final message")
            except grpc.RpcError as e:
                if (e.code() == grpc.StatusCode.UNAVAILABLE and not started
                        and attempt < self._retries):
                    self._sleep_before_retry(attempt)
                    continue
                raise IcaeError(e.code(), e.details() or "") from None

    def complete(self, slot_ids: Sequence[str], prompt: Optional[str] = None, **kw) -> Final:
        """generate() run to its end: the Final, whose .text is the whole answer."""
        final = None
        for part in self.generate(slot_ids, prompt, **kw):
            if isinstance(part, Final):
                final = part
        return final

    def ask(self, text: Union[str, bytes], prompt: Optional[str] = None, **kw) -> Final:
        """Encodes `text` (a cache hit when it was encoded before) and answers `prompt` from
        its slots. A slot evicted between the two calls (NOT_FOUND) is encoded again once."""
        for attempt in range(2):
            slot = self.encode(text=text).slot_id
            try:
                final = self.complete([slot], prompt, **kw)
                return dataclasses.replace(final, reencoded=attempt > 0)
            except IcaeError as e:
                if e.code != grpc.StatusCode.NOT_FOUND or attempt > 0:
                    raise
        raise AssertionError("unreachable")
