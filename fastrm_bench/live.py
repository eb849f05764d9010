"""FastRM on the fly: each answer token with its relevancy map, as soon as the model has chosen it.

`stream_fastrm` runs the adapter's own greedy `generate` (same settings, same answer as a run) in a
background thread, with a streamer and a forward hook on the decoder's final norm. When token t is
chosen, the final-norm state that predicted it (``h[p_t]``, already computed by that decoding step)
and the image tokens' states (from the prompt's forward) go through the FastRM proxy at once, before
the next step; the caller receives the token and its map together. The maps equal those of the
`fastrm` method on the finished answer (tested).
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from fastrm_bench.fastrm.model import FastRM
from fastrm_bench.interfaces import Generation, ModelAdapter, ModelInputs


@dataclass
class TokenMap:
    """One generated token and its FastRM map."""

    index: int
    token_id: int
    text: str  # the token decoded on its own
    map: torch.Tensor  # [n_image_tokens]: probability that each image token is relevant to this token
    token_at: float  # time.perf_counter() when generation handed the token over
    map_at: float  # time.perf_counter() when its map was ready

    @property
    def token_to_map_seconds(self) -> float:
        return self.map_at - self.token_at


@dataclass
class StreamEnd:
    """The last item of a stream: the finished answer (what `adapter.generate` returns, hidden states included)."""

    generation: Generation
    seconds: float


class _Streamer:
    """HF streamer: the first `put` is the prompt, each later one a chosen token."""

    def __init__(self, on_token):
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.on_token(int(value.reshape(-1)[0]))

    def end(self) -> None:
        return None


_ADAPTER_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def adapter_lock(adapter: ModelAdapter) -> threading.Lock:
    """One stream at a time per adapter (the streamer is attached to its model for the call)."""
    with _LOCKS_GUARD:
        return _ADAPTER_LOCKS.setdefault(id(adapter), threading.Lock())


@torch.no_grad()
def stream_fastrm(adapter: ModelAdapter, proxy: FastRM, inputs: ModelInputs, max_new_tokens: int = 10
                  ) -> Iterator[TokenMap | StreamEnd]:
    """Yield a `TokenMap` per answer token while the model generates, then one `StreamEnd`.

    Stop tokens (end of sequence, padding) are not yielded: the tokens are those of the answer that
    `adapter.generate(inputs, max_new_tokens)` returns. Errors in generation are raised here.
    """
    items: queue.Queue = queue.Queue()
    states: list[torch.Tensor] = []  # the final norm's output of every forward: prompt [L0, d], then one [1, d] per step
    stops = adapter.stop_ids()
    image_positions = inputs.layout.positions
    dtype = next(proxy.parameters()).dtype
    count = {"tokens": 0, "stopped": False}

    def on_token(token_id: int) -> None:
        token_at = time.perf_counter()
        t = count["tokens"]
        count["tokens"] += 1
        if count["stopped"] or token_id in stops:
            count["stopped"] = True
            return
        query = states[t][-1]  # forward t (the prompt's for t = 0) computed the state that predicted token t
        image = states[0][image_positions.to(states[0].device)]
        values = proxy(query.to(dtype), image.to(dtype).unsqueeze(0)).reshape(-1).float().cpu()
        items.put(TokenMap(t, token_id, adapter.tokenizer.decode([token_id]), values, token_at, time.perf_counter()))

    def capture(module, args, output) -> None:
        states.append(output[0].detach())  # batch of one

    def work() -> None:
        lock = adapter_lock(adapter)
        with lock:
            model = adapter.model
            norm = adapter.final_norm()
            handle = norm.register_forward_hook(capture)
            # the adapter's own generate, with the streamer added to the model's generate for this call
            model.generate = functools.partial(type(model).generate, model, streamer=_Streamer(on_token))
            start = time.perf_counter()
            try:
                generation = adapter.generate(inputs, max_new_tokens, return_hidden=True)[0]
                items.put(StreamEnd(generation, time.perf_counter() - start))
            except BaseException as err:  # handed to the consumer
                items.put(err)
            finally:
                del model.generate
                handle.remove()

    thread = threading.Thread(target=work, name="fastrm-stream", daemon=True)
    thread.start()
    while True:
        item = items.get()
        if isinstance(item, BaseException):
            thread.join()
            raise item
        yield item
        if isinstance(item, StreamEnd):
            thread.join()
            return
