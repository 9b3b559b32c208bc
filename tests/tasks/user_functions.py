"""User functions that tests name by import path ('user_functions:...'); pytest puts this folder on sys.path."""


def affine(a: int, b: int, p: int) -> int:
    return (2 * a + 3 * b + 1) % p


def first_two_agree(bits: tuple[int, ...]) -> int:
    return int(bits[0] == bits[1])


def not_a_bit(bits: tuple[int, ...]) -> int:
    return 2


not_callable = 3
