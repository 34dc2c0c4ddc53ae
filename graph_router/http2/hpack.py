"""HPACK (RFC 7541): header compression for HTTP/2, both directions.

:class:`Decoder` is complete: the static and dynamic tables, table size updates,
every literal form and Huffman-coded strings (gRPC clients code their headers).
:class:`Encoder` sends no dynamic-table entries: each field is a static-table index
when name and value match one, else a literal "without indexing" (§6.2.2) naming a
static entry where it can, never Huffman-coded. That keeps our side stateless, which
is allowed (the encoder decides what to index) and cheap: the router's headers are a
few fixed blocks, built once.

Names and values are ``str`` decoded as Latin-1, one character per octet, so sizes
count octets as §4.1 does and any octet survives the round trip.
"""

from __future__ import annotations

from . import huffman

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)
_STATIC_LEN = len(STATIC_TABLE)
_STATIC_FULL = {pair: i + 1 for i, pair in reversed(list(enumerate(STATIC_TABLE)))}
_STATIC_NAME = {name: i + 1 for i, (name, _) in reversed(list(enumerate(STATIC_TABLE)))}

ENTRY_OVERHEAD = 32  # §4.1
# Decoded blocks remembered per connection (see Decoder.decode), and the longest one.
_CACHE_ENTRIES = 64
_CACHE_BLOCK_BYTES = 1024


class HPACKError(ValueError):
    """A header block that cannot be decoded: a COMPRESSION_ERROR (RFC 9113 §4.3)."""


class Decoder:
    """One connection's decoding context (its dynamic table lives as long as the connection)."""

    def __init__(self, max_table_size: int = 4096, max_string: int = 65536) -> None:
        # The limit we announced (SETTINGS_HEADER_TABLE_SIZE); the peer's updates stay within it.
        self.max_allowed = max_table_size
        self.max_size = max_table_size
        self.size = 0
        self.max_string = max_string
        self.table: list[tuple[str, str]] = []  # newest first: index 62 is table[0]
        # Decoded blocks by their bytes, valid while the dynamic table does not change:
        # a gRPC client sends the same fully-indexed block for every call after its first.
        self._cache: dict[bytes, list[tuple[str, str]]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The header list of one complete block, in order (callers must not change it)."""
        cache = self._cache
        found = cache.get(block)
        if found is not None:
            return found
        headers: list[tuple[str, str]] = []
        changed = False
        i = 0
        n = len(block)
        while i < n:
            b = block[i]
            if b & 0x80:  # indexed field, §6.1
                index, i = _integer(block, i, 7)
                headers.append(self._entry(index))
                continue
            if b & 0x40:  # literal with incremental indexing, §6.2.1
                index, i = _integer(block, i, 6)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, i = self._string(block, i)
                value, i = self._string(block, i)
                self._add(name, value)
                changed = True
                headers.append((name, value))
                continue
            if b & 0x20:  # dynamic table size update, §6.3: only before the first field
                if headers:
                    raise HPACKError("a table size update after a header field")
                size, i = _integer(block, i, 5)
                if size > self.max_allowed:
                    raise HPACKError(f"a table size update to {size}, over the {self.max_allowed} allowed")
                self.max_size = size
                self._evict(0)
                changed = True
                continue
            # literal without indexing (0000xxxx) or never indexed (0001xxxx), §6.2.2-3
            index, i = _integer(block, i, 4)
            if index:
                name = self._entry(index)[0]
            else:
                name, i = self._string(block, i)
            value, i = self._string(block, i)
            headers.append((name, value))
        if changed:
            cache.clear()
        elif n <= _CACHE_BLOCK_BYTES:
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[block] = headers
        return headers

    def _entry(self, index: int) -> tuple[str, str]:
        if index == 0:
            raise HPACKError("index 0")
        if index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if dynamic >= len(self.table):
            raise HPACKError(f"index {index} is past the end of the table")
        return self.table[dynamic]

    def _string(self, block: bytes, i: int) -> tuple[str, int]:
        if i >= len(block):
            raise HPACKError("the block ends before a string")
        coded = block[i] & 0x80
        length, i = _integer(block, i, 7)
        end = i + length
        if end > len(block):
            raise HPACKError("a string runs past the end of the block")
        if length > self.max_string:
            raise HPACKError(f"a {length}-octet string, over the {self.max_string} allowed")
        raw = block[i:end]
        if coded:
            try:
                raw = huffman.decode(raw)
            except huffman.HuffmanError as exc:
                raise HPACKError(str(exc)) from None
        return raw.decode("latin-1"), end

    def _add(self, name: str, value: str) -> None:
        size = len(name) + len(value) + ENTRY_OVERHEAD
        if size > self.max_size:  # §4.4: an entry larger than the table empties it
            self.table.clear()
            self.size = 0
            return
        self._evict(size)
        self.table.insert(0, (name, value))
        self.size += size

    def _evict(self, room: int) -> None:
        table = self.table
        while table and self.size + room > self.max_size:
            name, value = table.pop()
            self.size -= len(name) + len(value) + ENTRY_OVERHEAD


def _integer(block: bytes, i: int, prefix: int) -> tuple[int, int]:
    """An integer with an N-bit prefix (§5.1) at block[i]; (value, next index)."""
    limit = (1 << prefix) - 1
    value = block[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    n = len(block)
    while True:
        if i >= n:
            raise HPACKError("the block ends inside an integer")
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 28:  # no header needs an integer of 2^28 or more
            raise HPACKError("an integer too large")


def integer(value: int, prefix: int, flags: int) -> bytes:
    """``value`` with an N-bit prefix (§5.1), ``flags`` in the first octet's high bits."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(data: bytes) -> bytes:
    return integer(len(data), 7, 0) + data


def encode_field(name: str, value: str) -> bytes:
    """One field: a static index, or a literal without indexing (§6.2.2), no Huffman."""
    full = _STATIC_FULL.get((name, value))
    if full is not None:
        return integer(full, 7, 0x80)
    data = value.encode("latin-1")
    index = _STATIC_NAME.get(name)
    if index is not None:
        return integer(index, 4, 0) + _literal(data)
    return b"\x00" + _literal(name.encode("latin-1")) + _literal(data)


def encode(headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    """A header block for ``headers`` (our side keeps no dynamic table)."""
    return b"".join([encode_field(name, value) for name, value in headers])
