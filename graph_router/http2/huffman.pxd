# Compiled (see setup.py): the Huffman decoding loop runs in C.
