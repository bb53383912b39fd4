#!/usr/bin/env python3
"""Prints the "Against other engines" tables from criterion's estimates and
draws docs/img/peers-scaling.svg (compile and evaluation time against rule
count). Usage: table.py CRITERION_DIR MEMORY_JSON SVG_OUT"""
import json, math, os, sys

crit, memory_file, svg_out = sys.argv[1], sys.argv[2], sys.argv[3]


def median(group, name):
    path = os.path.join(crit, group, name, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def fmt_ns(ns):
    if ns is None:
        return "—"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


rows = [
    ("rwd", ".rwd plan, explain off"),
    ("rwd_explain", ".rwd plan, explain on"),
    ("native", "hand-written Rust (rust_decimal)"),
    ("rhai", "rhai 1.27 script (+ facts)"),
    ("zen", "zen-engine 2.1 JDM (+ facts)"),
    ("cel", "cel-interpreter 0.10 conditions + Rust awards (+ facts)"),
    ("facts", "building the peers' flat inputs alone"),
]
native = median("peers_tx", "native")
rwd = median("peers_tx", "rwd")
print("| implementation | ns/tx (median) | × hand-written Rust | .rwd faster by | batch of 1,024: ns/tx | tx/s |")
print("|---|---|---|---|---|---|")
for key, label in rows:
    ns = median("peers_tx", key)
    batch = median("peers_batch", key)
    per = batch / 1024 if batch else None
    cells = [
        label,
        f"{ns:,.0f}" if ns else "—",
        f"{ns / native:.1f}×" if ns and native else "—",
        f"{ns / rwd:.1f}×" if ns and rwd and key in ("rhai", "zen", "cel", "native") else "",
        f"{per:,.0f}" if per else "—",
        f"{1e9 / per:,.0f}" if per else "—",
    ]
    print("| " + " | ".join(cells) + " |")

try:
    with open(memory_file) as f:
        memory = {m["rules"]: m for m in json.load(f)}
except (OSError, ValueError):
    memory = {}
print()
print("| rules | compile (median) | plan bytes kept | bytes/rule | expression nodes | evaluate one tx (median) |")
print("|---|---|---|---|---|---|")
points = []
for rules in (10, 100, 1000, 10000):
    m = memory.get(rules, {})
    if "refused" in m:
        print(f"| {rules:,} | refused: {m['refused']} | | | | |")
        continue
    comp = median("peers_compile", str(rules))
    ev = median("peers_eval_rules", str(rules))
    if comp is None:
        continue
    b = m.get("plan_bytes")
    print(f"| {rules:,} | {fmt_ns(comp)} | {b:,} | {b // rules:,} | {m.get('nodes', 0):,} | {fmt_ns(ev)} |"
          if b is not None else f"| {rules:,} | {fmt_ns(comp)} | — | — | — | {fmt_ns(ev)} |")
    points.append((rules, comp, ev))

# The plot: two log-log panels, compile time and evaluation time.
W, H, PAD = 720, 300, 60


def panel(x0, title, unit, series):
    if not series:
        return ""
    xs = [math.log10(r) for r, _ in series]
    ys = [math.log10(v) for _, v in series]
    xmin, xmax = 0.8, max(xs) + 0.2
    ymin, ymax = math.floor(min(ys)), math.ceil(max(ys) + 0.01)
    pw, ph = W / 2 - PAD - 20, H - 2 * PAD

    def px(x):
        return x0 + PAD + (x - xmin) / (xmax - xmin) * pw

    def py(y):
        return PAD + ph - (y - ymin) / (ymax - ymin) * ph

    out = [f'<text x="{x0 + PAD + pw / 2:.0f}" y="30" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{x0 + PAD}" y="{PAD}" width="{pw:.0f}" height="{ph}" fill="none" stroke="#999"/>']
    for e in range(ymin, ymax + 1):
        out.append(f'<line x1="{x0 + PAD}" x2="{x0 + PAD + pw:.0f}" y1="{py(e):.1f}" y2="{py(e):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + PAD - 6}" y="{py(e) + 4:.1f}" text-anchor="end" font-size="11">{fmt_ns(10 ** e)}</text>')
    for r, _ in series:
        x = px(math.log10(r))
        out.append(f'<text x="{x:.1f}" y="{PAD + ph + 16}" text-anchor="middle" font-size="11">{r:,}</text>')
    out.append(f'<text x="{x0 + PAD + pw / 2:.0f}" y="{H - 14}" text-anchor="middle" font-size="12">rules ({unit})</text>')
    pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for x, y, (_, v) in zip(xs, ys, series):
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="#1f77b4"/>')
        out.append(f'<text x="{px(x) + 6:.1f}" y="{py(y) - 6:.1f}" font-size="11">{fmt_ns(v)}</text>')
    return "\n".join(out)


svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif">',
       '<rect width="100%" height="100%" fill="white"/>',
       panel(0, "Compile a generated program", "log scale; median", [(r, c) for r, c, _ in points]),
       panel(W / 2, "Evaluate one transaction", "log scale; median", [(r, e) for r, _, e in points if e]),
       "</svg>"]
os.makedirs(os.path.dirname(svg_out) or ".", exist_ok=True)
with open(svg_out, "w") as f:
    f.write("\n".join(svg) + "\n")
print(f"\nplot: {svg_out}")
