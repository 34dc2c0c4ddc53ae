"""HPACK's Huffman code (RFC 7541 §5.2, Appendix B): decoding, and encoding for tests.

The code is canonical: codes of one length are consecutive and ordered by symbol, and
each length's first code follows the previous length's last. So the bit length of each
of the 257 symbols (256 octets and EOS) is all the table needs; the codes are derived.

Decoding walks a 4-bit-at-a-time state machine built once at import: a state is a
node of the code tree (at most one symbol can end within 4 bits, the shortest code
being 5 bits long), so a string costs two table look-ups per octet.
"""

from __future__ import annotations

# Bit length of the code of each symbol 0..255, then EOS (256): RFC 7541 Appendix B.
LENGTHS: tuple[int, ...] = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # ' ' .. '/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # '0' .. '?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # '@' .. 'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 'P' .. '_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # '`' .. 'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 'p' .. 127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 240-255
    30,  # EOS
)

EOS = 256


class HuffmanError(ValueError):
    """Not a valid Huffman-coded string (RFC 7541 §5.2)."""


def _codes() -> list[int]:
    """The canonical code of each symbol, from the lengths."""
    order = sorted(range(257), key=lambda s: (LENGTHS[s], s))
    codes = [0] * 257
    code = 0
    previous = LENGTHS[order[0]]
    for i, sym in enumerate(order):
        if i:
            code = (code + 1) << (LENGTHS[sym] - previous)
        previous = LENGTHS[sym]
        codes[sym] = code
    return codes


CODES: list[int] = _codes()

# The decoding machine. A state is an internal node of the code tree (0: the root).
# _STEP[state * 16 + nibble] = next_state << 9 | emitted << 8 | symbol, or -1 where
# the bits spell EOS (an error inside a string). _ACCEPT[state]: a string may end
# here (padding of at most 7 bits, all ones, RFC 7541 §5.2).
_STEP: list[int] = []
_ACCEPT: list[bool] = []


def _build() -> None:
    children: list[list[int]] = [[-1, -1]]  # node -> [left, right]; leaf = -(symbol + 2)
    for sym in range(257):
        code, length = CODES[sym], LENGTHS[sym]
        node = 0
        for bit_index in range(length - 1, -1, -1):
            bit = (code >> bit_index) & 1
            if bit_index == 0:
                children[node][bit] = -(sym + 2)
            else:
                nxt = children[node][bit]
                if nxt == -1:
                    nxt = len(children)
                    children.append([-1, -1])
                    children[node][bit] = nxt
                node = nxt
    # Depth and all-ones path of each node, for the padding rule.
    ones: dict[int, int] = {0: 0}  # node -> number of 1 bits when the path is all ones
    node, depth = 0, 0
    while True:
        nxt = children[node][1]
        if nxt < 0:
            break
        depth += 1
        ones[nxt] = depth
        node = nxt
    for state in range(len(children)):
        _ACCEPT.append(state in ones and ones[state] <= 7)
        for nibble in range(16):
            node = state
            emitted = -1
            bad = False
            for shift in (3, 2, 1, 0):
                nxt = children[node][(nibble >> shift) & 1]
                if nxt < 0:
                    sym = -nxt - 2
                    if sym == EOS:
                        bad = True
                        break
                    emitted = sym
                    node = 0
                else:
                    node = nxt
            _STEP.append(-1 if bad else node << 9 | (256 if emitted >= 0 else 0) | max(emitted, 0))


_build()


def decode(data: bytes) -> bytes:
    """The octets a Huffman-coded string stands for; HuffmanError if it is not valid."""
    step = _STEP
    out = bytearray()
    state = 0
    for octet in data:
        t = step[state << 4 | octet >> 4]
        if t < 0:
            raise HuffmanError("the string contains EOS")
        if t & 256:
            out.append(t & 255)
        state = t >> 9
        t = step[state << 4 | (octet & 15)]
        if t < 0:
            raise HuffmanError("the string contains EOS")
        if t & 256:
            out.append(t & 255)
        state = t >> 9
    if not _ACCEPT[state]:
        raise HuffmanError("the string's padding is not a prefix of EOS shorter than 8 bits")
    return bytes(out)


def encode(data: bytes) -> bytes:
    """``data`` Huffman-coded (the router sends literals raw; this serves tests and tools)."""
    acc = bits = 0
    out = bytearray()
    for octet in data:
        acc = acc << LENGTHS[octet] | CODES[octet]
        bits += LENGTHS[octet]
        while bits >= 8:
            bits -= 8
            out.append(acc >> bits & 255)
        acc &= (1 << bits) - 1
    if bits:
        out.append((acc << (8 - bits) | (1 << (8 - bits)) - 1) & 255)
    return bytes(out)
