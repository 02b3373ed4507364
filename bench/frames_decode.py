"""Cost of reading a client frame: today's path against typed decoding.

    python3 bench/frames_decode.py            # about 20 s
    python3 bench/frames_decode.py --quick

For a few typical frames (``message.send`` first), each way reads the JSON text
into checked values, as the WebSocket dispatch needs them (``id``, ``type``
and every field of the frame):

* ``fields``   chat.frames.parse (orjson) + the id check + chat.frames.Fields
  reads, in the handler's order (the code before typed frames);
* ``msgspec``  chat.protocol.decode_frame: one pass into the frame's Struct
  (tagged union of every client frame, constraints and text pattern in C);
* ``pydantic`` (if installed) pydantic v2 strict models with the same
  constraints, a discriminated union, ``TypeAdapter.validate_json``.

The ways alternate within each round (so a change in the machine's speed
falls on all alike); the figure is the median over rounds of the cost per
frame, and the ratio is against ``fields``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chat.frames import Fields, parse  # noqa: E402
from chat.protocol import TEXT_PATTERN, decode_frame  # noqa: E402

FRAMES = {
    "message.send": '{"type":"message.send","id":17,"conversation_id":4211,'
                    '"client_id":"0b6f9c1e-8d1a-4c2e-9f4b-1a2b3c4d5e6f",'
                    '"text":"Bonjour Madame Chabot, Léa a oublié son cahier de maths. Merci !"}',
    "read": '{"type":"read","id":18,"conversation_id":4211,"seq":130}',
    "typing": '{"type":"typing","conversation_id":4211}',
    "conversation.history": '{"type":"conversation.history","id":19,"conversation_id":4211,"before":130,"limit":50}',
}

# Today's reads, as the handlers of chat/web.py made them.
READS: dict[str, Callable[[Fields], Any]] = {
    "message.send": lambda f: (f.int("conversation_id"), f.str("client_id"), f.str("text", False, ""),
                               f.str_list("attachments", required=False)),
    "read": lambda f: (f.int("conversation_id"), f.int("seq")),
    "typing": lambda f: f.int("conversation_id"),
    "conversation.history": lambda f: (f.int("conversation_id"), f.int("after", False), f.int("before", False),
                                       f.int("limit", False, 50)),
}


def with_fields(raw: str) -> Any:
    data = parse(raw)
    request_id = data.get("id")
    if request_id is not None and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        raise ValueError("id")
    fields = Fields(data)
    return READS[fields.str("type")](fields)


try:
    from typing import Annotated, Literal, Union

    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
except ImportError:
    TypeAdapter = None
else:
    Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
    # Rust's regex has no surrogates: the pattern without them (JSON text cannot carry one to pydantic).
    Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN.replace(r"\ud800-\udfff", ""))]
    UploadId = Annotated[str, StringConstraints(max_length=64, pattern=TEXT_PATTERN.replace(r"\ud800-\udfff", ""))]

    class Base(BaseModel):
        model_config = ConfigDict(strict=True, frozen=True)
        id: Union[Int64, str, None] = None

    class PMessageSend(Base):
        type: Literal["message.send"]
        conversation_id: Int64
        client_id: Text
        text: Text = ""
        attachments: Annotated[list[UploadId], Field(max_length=100)] = []

    class PRead(Base):
        type: Literal["read"]
        conversation_id: Int64
        seq: Int64

    class PTyping(Base):
        type: Literal["typing"]
        conversation_id: Int64

    class PHistory(Base):
        type: Literal["conversation.history"]
        conversation_id: Int64
        after: Union[Int64, None] = None
        before: Union[Int64, None] = None
        limit: Int64 = 50


def pydantic_decoder() -> Callable[[str], Any] | None:
    if TypeAdapter is None:
        return None
    frames = Union[PMessageSend, PRead, PTyping, PHistory]
    return TypeAdapter(Annotated[frames, Field(discriminator="type")]).validate_json


def measure(decode: Callable[[str], Any], raw: str, number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        decode(raw)
    return (time.perf_counter() - started) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, number = (5, 5_000) if args.quick else (15, 20_000)
    ways: dict[str, Callable[[str], Any]] = {"fields": with_fields, "msgspec": decode_frame}
    pydantic = pydantic_decoder()
    if pydantic is not None:
        ways["pydantic"] = pydantic
    for name, raw in FRAMES.items():  # every way reads every frame
        for decode in ways.values():
            assert decode(raw) is not None, name
    print(f"{'frame':<22}" + "".join(f"{way:>12}" for way in ways) + "".join(
        f"{way + '/fields':>18}" for way in ways if way != "fields"))
    for name, raw in FRAMES.items():
        samples: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(rounds):
            for way, decode in ways.items():
                samples[way].append(measure(decode, raw, number))
        median = {way: statistics.median(values) for way, values in samples.items()}
        print(f"{name:<22}" + "".join(f"{median[way] * 1e9:>9.0f} ns" for way in ways) + "".join(
            f"{median[way] / median['fields']:>18.2f}" for way in ways if way != "fields"))


if __name__ == "__main__":
    main()
