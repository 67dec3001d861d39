#!/usr/bin/env python3
"""Writes build-data/symbol-order.txt: the functions of chat-proxy that a profile saw run, hottest
first, under their names in each given build of the binary.

    build-data/symbol-order.py OUT PROFILE_DIR PROFILED_BINARY [OTHER_BINARY ...]

PROFILE_DIR holds callgrind outputs (made with `--demangle=no`) of runs of PROFILED_BINARY. A
function's name carries a hash that differs between builds of the same code (`cargo build
--bins` and `cargo bench` give the dependencies other hashes), so in the other builds a
function is found by its name without the hash and its size, and each build's own name is
written.
"""
import collections
import pathlib
import re
import subprocess
import sys

LEGACY_HASH = re.compile(r"17h[0-9a-f]{16}E$")
LOCAL_SUFFIX = re.compile(r"\.\d+$")
RECURSION = re.compile(r"'\d+$")


def key(symbol):
    """The name without what changes between builds."""
    return LOCAL_SUFFIX.sub("", LEGACY_HASH.sub("E", symbol))


def profile_costs(directory):
    """Instructions run in each function of the chat-proxy binary, summed over the profiles."""
    costs = collections.Counter()
    for path in sorted(pathlib.Path(directory).glob("cg.*")):
        names = {"ob": {}, "fn": {}}
        obj = fn = None
        after_call = False

        def resolve(kind, rest):
            match = re.match(r"\((\d+)\)(?: (.*))?$", rest)
            if not match:
                return rest
            if match.group(2) is not None:
                names[kind][match.group(1)] = match.group(2)
            return names[kind].get(match.group(1))

        with open(path, errors="replace") as lines:
            for line in lines:
                line = line.rstrip("\n")
                field, _, rest = line.partition("=")
                if field == "ob":
                    obj = resolve("ob", rest)
                elif field == "fn":
                    fn = RECURSION.sub("", resolve("fn", rest) or "")
                elif field == "cob":
                    resolve("ob", rest)
                elif field == "cfn":
                    resolve("fn", rest)
                elif field == "calls":
                    # The next cost line is the call's inclusive cost, not the caller's own.
                    after_call = True
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if after_call:
                        after_call = False
                        continue
                    parts = line.split()
                    if len(parts) >= 2 and obj and obj.endswith("/chat-proxy") and fn:
                        costs[fn] += int(parts[1])
    return costs


def code_symbols(binary):
    """The binary's functions: {name: size}."""
    output = subprocess.run(
        ["nm", "--defined-only", "--print-size", binary],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    sizes = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tT":
            sizes[parts[3]] = int(parts[1], 16)
    return sizes


def matcher(profiled, other):
    """Finds a profiled function's name in another build: same name without the hash, and
    the same size when one of those candidates has it."""
    by_key = collections.defaultdict(list)
    for symbol, size in other.items():
        by_key[key(symbol)].append((symbol, size))

    def find(function):
        if function in other:
            return [function]
        candidates = by_key.get(key(function), [])
        same_size = [s for s, size in candidates if size == profiled.get(function)]
        return same_size or [s for s, _ in candidates]

    return find


def main():
    out, directory, profiled_binary, *others = sys.argv[1:]
    costs = profile_costs(directory)
    profiled = code_symbols(profiled_binary)
    builds = [(profiled_binary, lambda f: [f] if f in profiled else [])]
    builds += [(other, matcher(profiled, code_symbols(other))) for other in others]
    written, order = set(), []
    found = collections.Counter()
    for function, _ in costs.most_common():
        for binary, find in builds:
            symbols = find(function)
            found[binary] += bool(symbols)
            for symbol in symbols:
                if symbol not in written:
                    written.add(symbol)
                    order.append(symbol)
    pathlib.Path(out).write_text("".join(f"{symbol}\n" for symbol in order))
    for binary, _ in builds:
        print(f"{binary}: {found[binary]} of the {len(costs)} profiled functions")
    print(f"{out}: {len(order)} symbols")


if __name__ == "__main__":
    main()
