"""The naive baseline: what a user would write without this project.

A confluent-kafka consumer loop that, for every message, runs a transformers ``pipeline`` on
PyTorch one text at a time with the same fine-tuned weights, produces the result and acks the
message before taking the next one. Run as ``python -m benchmarks.naive ...`` (a subprocess of
`benchmarks.run`, so its torch threads and memory are its own).

Why this form (docs/benchmarks.md): the checkpoint is an HF encoder folder plus a small state dict
(linear head, optional hashed n-gram lexical branch) and, when the bundle uses it, the pickled
TF-IDF branch (its margins computed with scipy, as the build fitted them). The documented way to
get token vectors out of an HF encoder is ``pipeline("feature-extraction")``; the user then
mean-pools, applies the head, and re-tokenizes for the lexical and TF-IDF branches, which need the
token ids the pipeline does not return. We
give the baseline the benefit of the doubt where it costs nothing: ``return_tensors=True`` (no
nested Python lists), the same truncation (max_tokens) and ``torch.set_num_threads`` equal to
onnxruntime's. Wrapping ``export.model.TorchCategorizer`` in a custom ``Pipeline`` subclass was the
alternative; transformers' ``Pipeline`` expects a ``PreTrainedModel`` (``.device``,
``.can_generate()``, ``.config``), so it needs shims a user would not write.

Per message: poll -> json.loads -> render text -> pipeline -> head -> produce -> flush (wait for
the broker's ack) -> synchronous commit of that offset: at least once, one message at a time.

Contract of `main`: processes exactly ``--messages`` valid messages from ``--input-topic`` (fresh
consumer group, from the beginning), writes one JSON result per message to ``--output-topic``
(key = input key) and a summary JSON to ``--result`` (internal timings, VmRSS/VmHWM), exits 0.
Exits non-zero if the messages do not arrive within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def load_categorizer(checkpoint: Path, threads: int) -> tuple[Any, list[str]]:
    """(text -> probability list, labels) from a ``--torch-checkpoint`` folder of ``python -m export train``."""
    import torch
    from torch import nn
    from transformers import pipeline

    from export.model import LexicalBranch
    from export.tfidf_branch import TFIDF_CHECKPOINT_FILE, TfidfBranch

    torch.set_num_threads(threads)
    info = json.loads((checkpoint / "labels.json").read_text(encoding="utf-8"))
    labels: list[str] = info["labels"]
    max_tokens = int(info["max_tokens"])
    encoder_dir = str(checkpoint / "encoder")
    extractor = pipeline("feature-extraction", model=encoder_dir, tokenizer=encoder_dir, device="cpu")
    state = torch.load(checkpoint / "categorizer_head.pt", map_location="cpu")
    hidden = extractor.model.config.hidden_size
    head = nn.Linear(hidden, len(labels))
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    lexical = None
    if info.get("lexical"):
        lexical = LexicalBranch(extractor.model.config.vocab_size, len(labels))
        lexical.load_state_dict({k.removeprefix("lexical."): v for k, v in state.items() if k.startswith("lexical.")})
        lexical.eval()
    head.eval()
    tokenize = {"truncation": True, "max_length": max_tokens}
    branch_path = checkpoint / TFIDF_CHECKPOINT_FILE
    branch = TfidfBranch.load(branch_path) if branch_path.is_file() else None

    def categorize(text: str) -> list[float]:
        token_vectors = extractor(text, return_tensors=True, tokenize_kwargs=tokenize)  # [1, T, hidden]
        with torch.inference_mode():
            logits = head(token_vectors.mean(dim=1))  # one text, no padding: plain mean = mean pooling
            if lexical is not None or branch is not None:
                enc = extractor.tokenizer(text, return_tensors="pt", **tokenize)
            if lexical is not None:
                logits = logits + lexical(enc["input_ids"], enc["attention_mask"])
            if branch is not None and branch.used:  # the TF-IDF margins, in numpy as the build fitted them
                logits = logits + torch.from_numpy(branch.extra_logits([enc["input_ids"][0].tolist()]))
            return torch.sigmoid(logits)[0].tolist()

    return categorize, labels


def _memory_mb() -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--input-topic", required=True)
    parser.add_argument("--output-topic", required=True)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--separator", default=" | ", help="text template separator (title, tags)")
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    from confluent_kafka import Consumer, KafkaError, Producer

    load_start = time.perf_counter()
    categorize, labels = load_categorizer(args.checkpoint, args.threads)
    load_s = time.perf_counter() - load_start

    consumer = Consumer({
        "bootstrap.servers": args.broker,
        "group.id": f"naive-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,  # Tansu holds joins for half the session timeout
    })
    producer = Producer({"bootstrap.servers": args.broker, "acks": "all", "enable.idempotence": False})
    consumer.subscribe([args.input_topic])
    processed = 0
    model_s = 0.0
    first_done: float | None = None
    last_done = 0.0
    deadline = time.monotonic() + args.timeout
    try:
        while processed < args.messages:
            if time.monotonic() > deadline:
                print(f"naive: only {processed} of {args.messages} messages within {args.timeout} s", file=sys.stderr)
                return 1
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                # confluent_kafka's public name for librdkafka's internal code (the underscore is theirs)
                if msg.error().code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - public constant
                    continue
                raise RuntimeError(f"consume: {msg.error()}")
            event = json.loads(msg.value())
            text = args.separator.join(p for p in (event.get("title", ""), event.get("tags", "")) if p)
            t0 = time.perf_counter()
            probabilities = categorize(text)
            model_s += time.perf_counter() - t0
            ranked = sorted(zip(labels, probabilities, strict=True), key=lambda x: -x[1])
            result = {
                "product_id": event["product_id"],
                "top_category": ranked[0][0],
                "categories": [{"name": n, "score": s} for n, s in ranked],
                "processed_at": datetime.now(UTC).isoformat(),
            }
            producer.produce(args.output_topic, key=msg.key(), value=json.dumps(result, ensure_ascii=False).encode())
            if producer.flush(30):  # wait for the broker's ack before committing the input offset
                raise RuntimeError("output not acknowledged within 30 s")
            consumer.commit(message=msg, asynchronous=False)
            processed += 1
            last_done = time.perf_counter()
            if first_done is None:
                first_done = last_done
    finally:
        consumer.close()
        producer.flush(10)
    span = last_done - (first_done or last_done)
    summary = {
        "messages": processed,
        "load_s": load_s,
        "internal_tps": (processed - 1) / span if span > 0 else None,
        "model_ms_mean": model_s / processed * 1000 if processed else None,
        "memory_mb": _memory_mb(),
        "threads": args.threads,
        "pid": os.getpid(),
    }
    args.result.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
