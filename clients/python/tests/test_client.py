"""The Python client against real services: `icae up` on the embedded default model, started
by these tests on free loopback ports (one plain, one with API keys).

Run from the repository root after scripts/build.sh:  /usr/bin/python3 -m pytest clients/python
"""
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python"))
import icae_client  # noqa: E402
from icae_client import Final, IcaeClient, IcaeError  # noqa: E402

ICAE = os.environ.get("ICAE_BIN", str(ROOT / "build" / "tools" / "icae"))
CONTEXT = ("The carriage stopped at the gate of the old house a little after sunset, and the "
           "traveller stepped down into the wet road. No one came out to meet him.")
API_KEY = "python-client-test-key"


class Services:
    """`icae up` in the background; its encoder/decoder addresses and its file store folder."""

    def __init__(self, extra=()):
        if not os.access(ICAE, os.X_OK):
            pytest.fail(f"{ICAE} is missing: run scripts/build.sh first (or set ICAE_BIN)")
        self.tmp = tempfile.mkdtemp(prefix="icae_py_")
        self.store = os.path.join(self.tmp, "slots")
        self.proc = subprocess.Popen(
            [ICAE, "up", "--store", f"file://{self.store}?max_bytes=64M", "--threads", "1",
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        addrs = {}
        deadline = time.time() + 120
        while len(addrs) < 2 and time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            key, _, value = line.strip().partition("=")
            addrs[key] = value
        if len(addrs) < 2:
            self.stop()
            pytest.fail("icae up did not print encoder= and decoder= lines")
        self.encoder, self.decoder = addrs["encoder"], addrs["decoder"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def services():
    s = Services()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyed_services():
    keys = os.path.join(tempfile.mkdtemp(prefix="icae_py_keys_"), "keys.txt")
    with open(keys, "w") as f:
        f.write(f"{API_KEY} tenant-a\n")
    s = Services(["--api-keys-file", keys])
    yield s
    s.stop()


@pytest.fixture()
def client(services):
    with IcaeClient(services.encoder, services.decoder, timeout=60) as c:
        yield c


def test_encode_returns_a_content_address_and_is_cached_the_second_time(client):
    first = client.encode(text=CONTEXT)
    assert len(first.slot_id) == 64 and all(ch in "0123456789abcdef" for ch in first.slot_id)
    assert first.token_count > 0 and first.segment_count == 1
    assert first.slot_count == first.segment_count * client.model_info("encoder")["mem_size"]
    again = client.encode(text=CONTEXT)
    assert again.slot_id == first.slot_id and again.cached


def test_generate_streams_text_deltas_then_one_final(client):
    slot = client.encode(text=CONTEXT).slot_id
    parts = list(client.generate([slot], mode="autoencode", max_new_tokens=24))
    assert isinstance(parts[-1], Final)
    deltas = parts[:-1]
    assert deltas and all(isinstance(p, str) for p in deltas)
    final = parts[-1]
    assert final.text == "".join(deltas)
    assert final.finish_reason in ("EOS", "LENGTH")
    assert final.usage["completion_tokens"] == len(final.token_ids) <= 24
    # Greedy decoding is deterministic: the same request gives the same answer.
    assert client.complete([slot], mode="autoencode", max_new_tokens=24).text == final.text


def test_errors_carry_the_grpc_code(client):
    with pytest.raises(IcaeError) as e:
        client.complete(["abc"], prompt="Who?")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(IcaeError) as e:
        client.complete(["0" * 64], prompt="Who?")
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(IcaeError) as e:
        client.encode(ids=[10 ** 9])
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError):
        client.encode()
    with pytest.raises(ValueError):
        client.generate(["0" * 64], mode="sing")


def test_ask_encodes_again_when_the_slot_was_evicted(services, client):
    text = CONTEXT + " It was raining."
    first = client.ask(text, "Repeat the first sentence of the text.", max_new_tokens=8)
    assert not first.reencoded
    # A context the decoder has not read yet (so its local cache cannot answer), evicted from
    # the store behind the client's back between the client's encode and its generate.
    fresh = CONTEXT + " The lamps were out."
    real_encode = client.encode

    def encode_then_evict(**kw):
        r = real_encode(**kw)
        for name in os.listdir(services.store):
            os.remove(os.path.join(services.store, name))
        client.encode = real_encode
        return r

    client.encode = encode_then_evict
    again = client.ask(fresh, "Repeat the first sentence of the text.", max_new_tokens=8)
    assert again.reencoded
    assert again.usage["completion_tokens"] >= 1


def test_unavailable_is_retried_with_backoff_then_raised(services):
    # Nothing listens on the decoder address given here: every attempt is UNAVAILABLE.
    c = IcaeClient(services.encoder, "127.0.0.1:1", timeout=5, retries=2, backoff=0.05)
    t0 = time.time()
    with pytest.raises(IcaeError) as e:
        c.complete(["0" * 64])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.time() - t0 >= 0.05 * (1 + 2) * 0.5  # two back-offs of 0.05 and 0.1 (jittered)
    c.close()
    with pytest.raises(ValueError):
        IcaeClient("a:1", "b:1", retries=-1)


def test_unavailable_then_success_is_one_answer(client, monkeypatch):
    # The decoder is briefly unavailable (e.g. a replica draining): the retry succeeds and the
    # caller sees one answer, no error.
    slot = client.encode(text=CONTEXT).slot_id
    real = client._decoder.Generate
    calls = []

    class Unavailable(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "draining"

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise Unavailable()
        return real(*a, **kw)

    monkeypatch.setattr(client._decoder, "Generate", flaky)
    final = client.complete([slot], mode="autoencode", max_new_tokens=4)
    assert len(calls) == 2 and final.usage["completion_tokens"] >= 1


def test_api_keys(keyed_services):
    s = keyed_services
    with IcaeClient(s.encoder, s.decoder) as anonymous:
        with pytest.raises(IcaeError) as e:
            anonymous.encode(text=CONTEXT)
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with IcaeClient(s.encoder, s.decoder, api_key=API_KEY) as c:
        final = c.ask(CONTEXT, "Repeat the first sentence of the text.", max_new_tokens=4)
        assert final.usage["completion_tokens"] >= 1
