#!/usr/bin/env python3
"""Lists the top-level imports of WebAssembly components, and checks them.

    component-imports.py [--forbid PREFIX]... [--manifest phasebox.toml] COMPONENT.wasm...

Prints one import per line under a `== FILE` header: an interface as its name (e.g.
`wasi:sockets/tcp@0.2.6`), anything else as its name and kind (the world's own `use`d types show
up as `phase-context (type)`). With `--forbid`, exits with status 1 if any component imports a
name that starts with PREFIX. With `--manifest`, also exits with status 1 if a component imports
an interface that the manifest's `[capabilities]` do not ask for, read the way wit/phase.wit
describes the grants: `phasebox:plugin/log` needs `log = true`, `.../results` needs
`results = true`, `.../secrets` a non-empty `secrets`, `wasi:http/*` a non-empty `http`,
`wasi:sockets/ip-name-lookup` a non-empty `dns` or any `network`, and the rest of `wasi:sockets/*`
any `network` (a `connect` pattern, `bind` or `udp`).

Why this exists: the host links an import only when the phase's grant covers it and refuses a
component that imports anything else, so what a plugin imports is part of its contract with its
manifest. `strings` also finds the names inside the embedded core modules and type sections,
which are not the component's imports; this reads the component's own import section instead,
with nothing but the standard library (wasm-tools is not installed on every machine).
"""

import argparse
import sys
import tomllib

# Section ids of the component binary format that matter here.
IMPORT_SECTION = 10
# The preamble's layer field: 1 marks a component (a core module has 0).
COMPONENT_LAYER = 1


class Reader:
    """Reads the component binary format's primitives from a byte string."""

    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self):
        if self.pos >= self.end:
            raise ValueError("unexpected end of section")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u32(self):
        """An unsigned LEB128 integer."""
        result = 0
        shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    def s33(self):
        """A signed LEB128 integer; only its length matters here."""
        while self.byte() & 0x80:
            pass

    def string(self):
        length = self.u32()
        if self.pos + length > self.end:
            raise ValueError("string runs past the end of its section")
        text = self.data[self.pos : self.pos + length].decode("utf-8")
        self.pos += length
        return text


# Names of the import sorts, by their byte in the binary format.
SORTS = {0x00: "core module", 0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}


def skip_externdesc(r):
    """Skips an import's `externdesc`, whose shape depends on its sort; returns the sort."""
    sort = r.byte()
    if sort == 0x00:  # core module: 0x00 0x11 typeidx
        if r.byte() != 0x11:
            raise ValueError("unknown core sort in an import")
        r.u32()
    elif sort in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
        r.u32()
    elif sort == 0x02:  # value: a primitive type byte or a type index
        r.s33()
    elif sort == 0x03:  # type: eq typeidx, or a fresh resource
        if r.byte() == 0x00:
            r.u32()
    else:
        raise ValueError(f"unknown import sort 0x{sort:02x}")
    return SORTS[sort]


def imports(data):
    """Returns (name, sort) for each entry of the component's top-level import sections."""
    if data[:4] != b"\0asm" or len(data) < 8:
        raise ValueError("not a WebAssembly binary")
    if int.from_bytes(data[6:8], "little") != COMPONENT_LAYER:
        raise ValueError("a core module, not a component")
    names = []
    r = Reader(data, 8)
    while r.pos < r.end:
        section = r.byte()
        size = r.u32()
        start = r.pos
        if section == IMPORT_SECTION:
            s = Reader(data, start, start + size)
            for _ in range(s.u32()):
                tag = s.byte()
                if tag not in (0x00, 0x01):
                    raise ValueError(f"unknown import name tag 0x{tag:02x}")
                name = s.string()
                if tag == 0x01:
                    s.string()  # a version suffix, already part of the name here
                names.append((name, skip_externdesc(s)))
        r.pos = start + size
    return names


def manifest_rules(path):
    """Returns (prefix, why) for each import prefix that the manifest at `path` does not cover."""
    with open(path, "rb") as f:
        caps = tomllib.load(f).get("capabilities", {})
    network = caps.get("network", {})
    any_network = bool(network.get("connect")) or network.get("bind", False) or network.get("udp", False)
    rules = []
    if not caps.get("log", False):
        rules.append(("phasebox:plugin/log@", "log = false"))
    if not caps.get("results", False):
        rules.append(("phasebox:plugin/results@", "results = false"))
    if not caps.get("secrets"):
        rules.append(("phasebox:plugin/secrets@", "secrets is empty"))
    if not caps.get("http"):
        rules.append(("wasi:http/", "http is empty"))
    if not any_network:
        if not caps.get("dns"):
            rules.append(("wasi:sockets/ip-name-lookup@", "dns and network are empty"))
        for iface in ("network", "instance-network", "tcp", "tcp-create-socket", "udp", "udp-create-socket"):
            rules.append((f"wasi:sockets/{iface}@", "network is empty"))
    return rules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forbid", action="append", default=[], metavar="PREFIX")
    parser.add_argument("--manifest", metavar="phasebox.toml")
    parser.add_argument("components", nargs="+", metavar="COMPONENT.wasm")
    args = parser.parse_args()
    rules = [(prefix, "forbidden by --forbid") for prefix in args.forbid]
    if args.manifest:
        rules += [(prefix, f"{args.manifest}: {why}") for prefix, why in manifest_rules(args.manifest)]
    failed = False
    for path in args.components:
        with open(path, "rb") as f:
            names = imports(f.read())
        print(f"== {path}")
        for name, sort in names:
            print(name if sort == "instance" else f"{name} ({sort})")
            for prefix, why in rules:
                if name.startswith(prefix):
                    print(f"error: {path} imports {name} ({why})", file=sys.stderr)
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
