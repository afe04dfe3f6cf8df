"""The bad-input suite: one table per kind of input, each row an input and the message fragment it must produce."""
