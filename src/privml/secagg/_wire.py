"""Length-prefixed binary fields: the byte encoding every SecAgg+ message is made of.

Big-endian integers, UTF-8 strings with a u16 length, byte strings with a u16 or u32 length.
The reader raises :class:`~privml.SecAggError` (``truncated`` when bytes run out,
``bad_message`` for anything else malformed) and insists that every byte is consumed, so a
message has exactly one encoding.
"""

from __future__ import annotations

import struct

from privml._exceptions import SecAggError

MAX_ID_BYTES = 256


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def tell(self) -> int:
        return self._size

    def u8(self, value: int) -> Writer:
        return self.raw(struct.pack(">B", value))

    def u16(self, value: int) -> Writer:
        return self.raw(struct.pack(">H", value))

    def u32(self, value: int) -> Writer:
        return self.raw(struct.pack(">I", value))

    def text(self, value: str) -> Writer:
        raw = value.encode("utf-8")
        return self.u16(len(raw)).raw(raw)

    def blob(self, value: bytes) -> Writer:
        return self.u16(len(value)).raw(value)

    def big(self, value: bytes) -> Writer:
        return self.u32(len(value)).raw(value)

    def raw(self, value: bytes) -> Writer:
        self._parts.append(bytes(value))
        self._size += len(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SecAggError("a message must be bytes", code="bad_message")
        self._data = memoryview(bytes(data))
        self._pos = 0

    def take(self, n: int) -> memoryview:
        if self._pos + n > len(self._data):
            raise SecAggError(f"message truncated: needs {self._pos + n} bytes, has "
                              f"{len(self._data)}", code="truncated")
        out = self._data[self._pos:self._pos + n]
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def text(self, *, what: str = "id") -> str:
        raw = bytes(self.take(self.u16()))
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecAggError(f"{what} is not UTF-8", code="bad_message") from None
        check_id(value, what=what)
        return value

    def blob(self) -> bytes:
        return bytes(self.take(self.u16()))

    def big(self) -> memoryview:
        return self.take(self.u32())

    def tell(self) -> int:
        return self._pos

    def end(self) -> None:
        if self._pos != len(self._data):
            raise SecAggError(f"{len(self._data) - self._pos} unexpected trailing bytes",
                              code="bad_message")


def check_id(value: object, *, what: str = "id") -> None:
    if (not isinstance(value, str) or not value
            or len(value.encode("utf-8")) > MAX_ID_BYTES):
        raise SecAggError(f"{what} must be a non-empty string of at most {MAX_ID_BYTES} "
                          f"bytes: {value!r}", code="bad_message")
