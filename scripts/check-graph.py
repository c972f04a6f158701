#!/usr/bin/env python3
"""Checks the workspace's dependency graph: which crate may use which, and no import
cycle between the modules of a crate.

Crates: each crate's path dependencies (normal ones; tests may use more) must be among
those ALLOWED_CRATES gives it, so a new edge against the data flow (the `pmv-data`
binary on the trainer, the shard format on the catalog, ...) fails here and is added to
the table, and to README's graph, only on purpose.

Modules: the compiler refuses a cycle between crates; inside a crate it accepts any, so
this script looks for them. A module is a file (`fetch/commit.rs` is `fetch::commit`, a
folder's `mod.rs` is the folder). An edge A -> B is any path in A that names B:
`crate::b::...`, `super::b::...`, `self::b::...` and their `{...}` groups, resolved to
the longest module that exists. A folder module may use its own children (it declares
them), so a bare `child::` path is not an edge; a child naming its parent is.

Usage: python3 scripts/check-graph.py [crate-src-dir ...]
With no argument it checks the crate graph, then `src/` and every `crates/*/src`. Prints each cycle (a set of
modules that reach each other) and exits 1 when there is one. A cycle that is allowed
stays allowed only by being listed in ALLOWED below, with its reason.
"""
import os
import re
import sys
import tomllib

# What each crate may depend on (README, "Architecture").
ALLOWED_CRATES = {
    "pmv-core": set(),
    "pmv-catalog": {"pmv-core"},
    "pmv-shard": {"pmv-core"},
    "pmv-term": {"pmv-core"},
    "pmv-train-cli": set(),
    "pmv-c10d": set(),
    "pmv-pipeline": {"pmv-core", "pmv-catalog", "pmv-shard"},
    "pmv-train": {"pmv-core", "pmv-catalog", "pmv-shard", "pmv-term", "pmv-train-cli", "pmv-c10d"},
    "pmv-data": {"pmv-core", "pmv-catalog", "pmv-pipeline", "pmv-term", "pmv-train-cli"},
}

# Cycles that stay, each with why.
ALLOWED = {
}

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}", re.S)
INNER_MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", re.M)


def modules(src):
    found = {}
    for folder, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(folder, f)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[0] == "bin":
                continue
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            with open(path, encoding="utf-8") as fh:
                text = re.sub(r"//[^\n]*", "", fh.read())
            found[tuple(parts)] = text
    return found


def refs(text):
    """(anchor, [segments]) for every path, with `{...}` groups expanded one level."""
    out = []
    for anchor, rest, group in GROUP.findall(text):
        prefix = [s for s in rest.split("::") if s]
        for item in group.split(","):
            item = [s.strip() for s in item.strip().split("::")]
            if item and item[0] and item[0] not in ("self", "*"):
                out.append((anchor, prefix + item))
    for anchor, rest in PATH.findall(text):
        out.append((anchor, [s for s in rest.split("::") if s]))
    return out


def edges(mods):
    graph = {m: set() for m in mods}

    def resolve(path):
        for i in range(len(path), 0, -1):
            if tuple(path[:i]) in mods:
                return tuple(path[:i])
        return None

    for m, text in mods.items():
        # Paths inside an inline module (`mod tests { ... }`) are one level deeper.
        cut = INNER_MOD.search(text)
        parts = [(text, 0)] if not cut else [(text[: cut.start()], 0), (text[cut.start():], 1)]
        for chunk, depth in parts:
            for anchor, segs in refs(chunk):
                if anchor == "crate":
                    base = []
                else:
                    here = list(m) + ["<inline>"] * depth
                    base = here[:-1] if anchor == "super" else here
                    while segs and segs[0] == "super":
                        base, segs = base[:-1], segs[1:]
                    base = [b for b in base if b != "<inline>"]
                target = resolve(base + segs)
                if target is not None and target != m:
                    graph[m].add(target)
    return graph


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted("::".join(c) or "(root)" for c in comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def crate_edges(root):
    """Problems with the crates' dependencies on each other (empty when none)."""
    manifests = [os.path.join(root, "Cargo.toml")] + sorted(
        os.path.join(root, "crates", c, "Cargo.toml") for c in os.listdir(os.path.join(root, "crates"))
    )
    ours = {}
    for m in manifests:
        with open(m, "rb") as fh:
            ours[m] = tomllib.load(fh)
    names = {doc["package"]["name"] for doc in ours.values()}
    problems = []
    for m, doc in ours.items():
        name = doc["package"]["name"]
        if name not in ALLOWED_CRATES:
            problems.append(f"{name}: not in ALLOWED_CRATES of scripts/check-graph.py")
            continue
        deps = {d for d in doc.get("dependencies", {}) if d in names}
        for d in sorted(deps - ALLOWED_CRATES[name]):
            problems.append(f"{name} depends on {d}, which the crate graph does not allow")
    return problems


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    bad = 0
    if not sys.argv[1:]:
        for problem in crate_edges(root):
            bad += 1
            print(problem)
    dirs = sys.argv[1:] or [os.path.join(root, "src")] + sorted(
        os.path.join(root, "crates", c, "src") for c in os.listdir(os.path.join(root, "crates"))
    )
    for src in dirs:
        name = os.path.basename(os.path.dirname(os.path.abspath(src)))
        for cycle in cycles(edges(modules(src))):
            key = (name, tuple(cycle))
            if key in ALLOWED:
                print(f"{name}: allowed cycle {' <-> '.join(cycle)} ({ALLOWED[key]})")
                continue
            bad += 1
            print(f"{name}: import cycle between {' <-> '.join(cycle)}")
    if bad:
        print(f"{bad} problem(s); see scripts/check-graph.py for what counts", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
