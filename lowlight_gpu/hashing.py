"""The salted 64-bit blake2b hashes: the same on every machine and Python run.

Each use has its own salt, so no two of them are correlated: pair seeds (salt: the run seed),
shards ("shard"), splits ("split"), output-name disambiguation ("name"), and the config fingerprint.
"""
import hashlib

SEED_BITS = 53  # pair seeds stay exact in any JSON reader (IEEE doubles hold 53-bit integers)


def stable_hash(text, salt=""):
    """A 64-bit hash of text that is the same on every machine and Python run."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def pair_seed(seed, source):
    """The seed of one pair: a hash of the run seed and the source's relative path."""
    return stable_hash(source, int(seed)) & ((1 << SEED_BITS) - 1)


def shard_of(rel, count):
    """Which of ``count`` shards the source with this id belongs to."""
    return stable_hash(rel, "shard") % count


def split_fraction(rel):
    """Where a source id falls in [0, 1) for the hash split."""
    return stable_hash(rel, "split") / 2.0 ** 64


def name_tag(name):
    """The 16-hex-digit tag that sets apart output names that would clash."""
    return f"{stable_hash(name, 'name'):016x}"


def fingerprint(blob: bytes) -> str:
    """A 16-hex-char hash of bytes (the config fingerprint of its canonical JSON)."""
    return hashlib.blake2b(blob, digest_size=8).hexdigest()
