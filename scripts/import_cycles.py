#!/usr/bin/env python3
"""Checks that no file of src/ imports, directly or around a loop, from one that imports it.

Builds the file-level import graph of the crate (`crate::a::b` paths and `super::` paths, tests
excluded) and prints its strongly connected components; exits 1 if there is any. Run by scripts/test.sh.
Usage: scripts/import_cycles.py [SRC_DIR]"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split('/')
            if parts[-1] == 'mod': parts = parts[:-1]
            if parts == ['lib'] or parts == ['main']: parts = []
            files[tuple(parts)] = p
def resolve(path):
    # longest prefix that is a file module
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files: return tuple(path[:n])
    return None
edges = {m: set() for m in files}
for m, p in files.items():
    src = open(p).read()
    src = src.split('#[cfg(test)]')[0]
    for mo in re.finditer(r'crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)(?:::\{([^}]*)\})?', src):
        base = mo.group(1).split('::')
        cands = [base]
        if mo.group(2):
            cands = [base + [x.strip().split('::')[0]] for x in mo.group(2).split(',') if x.strip() and x.strip()[0].islower()] or [base]
        for c in cands:
            t = resolve(c)
            if t and t != m and t != ():
                edges[m].add(t)
    for mo in re.finditer(r'\bsuper::(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)', src):
        parent = list(m[:-1])
        names = mo.group(1).strip('{}').split(',') if mo.group(1).startswith('{') else [mo.group(1)]
        for name in names:
            path = [x for x in name.strip().split('::') if x and x[0].islower()]
            t = resolve(parent + path) or (tuple(parent) if tuple(parent) in files else None)
            if t and t != m: edges[m].add(t)
# tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
for s in sccs:
    print('CYCLE:', ' '.join('/'.join(x) for x in sorted(s)))
if not sccs:
    print('no import cycles among', len(files), 'files')
sys.exit(1 if sccs else 0)
