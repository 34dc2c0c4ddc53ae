# Cython: compile answer.py as it is (no extension types): settle() runs before a
# streamed OpenAI answer's first byte goes on.
