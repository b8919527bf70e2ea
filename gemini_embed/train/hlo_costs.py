"""What one run of a compiled XLA program costs, read from its optimised HLO text.

Per device: the collectives (kind, shape, bytes, how often they run) and the matmul FLOPs.
XLA's `cost_analysis()` counts a while loop's body once, whatever its trip count; the gradient
cache runs the encoder inside two loops (`lax.map`, `lax.scan`), so here every computation is
weighted by how many times it runs per call: a while body by its trip count, read from the loop
condition (`counter < N`, the form `lax.scan` / `lax.map` / `fori_loop` lower to).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
                "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\](?:\{([^}]*)\})?")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\) -> .*\{$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = ")
_CALLS = re.compile(r"\b(calls|body|condition|to_apply)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")


@dataclasses.dataclass
class Array:
    dtype: str
    dims: tuple[int, ...]
    space: int = 0  # memory space from the layout's S(n): 0 device memory (HBM); TPU's 1 VMEM, 2 SMEM

    @property
    def bytes(self) -> int:
        return _DTYPE_BYTES.get(self.dtype, 0) * math.prod(self.dims)

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.dims))}]"


@dataclasses.dataclass
class Instr:
    name: str
    shape: list[Array]  # one array, or the elements of a tuple
    op: str
    operands: list[str]
    attrs: str  # everything after the operand list
    args: str = ""  # the raw operand text (a constant's literal)


@dataclasses.dataclass
class Collective:
    kind: str  # one of COLLECTIVES
    shape: str  # the gathered / reduced array (the larger of input and output)
    bytes: int  # per device, per execution
    group: int  # devices taking part
    runs: int  # executions per call of the program
    op_name: str  # the jax op it came from (metadata)
    arrays: tuple[str, ...] = ()  # every array it moves (XLA combines several into one tuple)

    @property
    def bytes_per_step(self) -> int:
        return self.bytes * self.runs


def _split_shape(text: str) -> tuple[str, str]:
    """'(s32[], f32[2]{0}) tuple(...)' -> ('(s32[], f32[2]{0})', 'tuple(...)')."""
    if text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                return text[:i + 1], text[i + 1:].lstrip()
    head, _, rest = text.partition(" ")
    return head, rest


def _arrays(shape_text: str) -> list[Array]:
    out = []
    for t, dims, layout in _ARRAY.findall(shape_text):
        space = re.search(r"S\((\d+)\)", layout)
        out.append(Array(t, tuple(int(d) for d in dims.split(",") if d), int(space.group(1)) if space else 0))
    return out


def _operands(text: str) -> tuple[str, str]:
    """'(%a, %b), attrs...' -> ('%a, %b', 'attrs...')."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return text[1:i], text[i + 1:]
    return "", text


def parse(hlo_text: str) -> dict[str, dict[str, Instr]]:
    """Computation name -> {instruction name -> Instr}; the entry computation is also under '__entry__'."""
    comps: dict[str, dict[str, Instr]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = comps.setdefault(header.group(1), {})
            if line.startswith("ENTRY"):
                comps["__entry__"] = current
            for pname, ptype in re.findall(r"([\w.\-]+): ([^,()]+(?:\([^)]*\))?)", line.split(" -> ")[0]):
                current[pname] = Instr(pname, _arrays(ptype), "parameter", [], "")
            continue
        m = _INSTR.match(line)
        if current is None or not m:
            continue
        shape_text, rest = _split_shape(line[m.end():])
        op, _, rest = rest.partition("(")
        args, attrs = _operands("(" + rest)
        current[m.group(1)] = Instr(m.group(1), _arrays(shape_text), op, re.findall(r"%([\w.\-]+)", args), attrs,
                                    args)
    return comps


def _trip_count(cond: dict[str, Instr], comps) -> int | None:
    """N from a loop condition `i < N` (the largest integer constant in it or its fusions)."""
    values = []
    for ins in cond.values():
        if ins.op == "constant" and ins.shape and ins.shape[0].dtype in ("s32", "s64", "u32"):
            values.append(int(ins.args) if re.fullmatch(r"-?\d+", ins.args.strip()) else 0)
        for _, callee in _CALLS.findall(ins.attrs):
            if callee in comps:
                values.append(_trip_count(comps[callee], comps) or 0)
    return max(values) if values and max(values) > 0 else None


def run_counts(comps, loops: bool = True) -> tuple[dict[str, int], list[str]]:
    """How often each computation runs per call of the entry (loops=False: as if every loop ran
    once, which is how cost_analysis counts); and notes on loops whose trip count could not be
    read (counted once)."""
    counts: dict[str, int] = defaultdict(int)
    notes: list[str] = []

    def visit(name: str, times: int) -> None:
        counts[name] += times
        for ins in comps[name].values():
            for kind, callee in _CALLS.findall(ins.attrs):
                if callee not in comps or kind == "condition":
                    continue
                factor = 1
                if ins.op == "while" and kind == "body" and loops:
                    cond = re.search(r"condition=%?([\w.\-]+)", ins.attrs)
                    trips = _trip_count(comps[cond.group(1)], comps) if cond else None
                    if trips is None:
                        notes.append(f"while {ins.name}: trip count unknown, counted once")
                    factor = trips or 1
                visit(callee, times * factor)
            for group in _BRANCHES.findall(ins.attrs):  # conditionals: assume every branch runs
                for callee in re.findall(r"%?([\w.\-]+)", group):
                    if callee in comps:
                        visit(callee, times)

    entry = next(k for k, v in comps.items() if v is comps["__entry__"] and k != "__entry__")
    visit(entry, 1)
    return dict(counts), notes


def _group_size(attrs: str, num_devices: int) -> int:
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if mesh:
        sizes = dict((k.strip("' "), int(v)) for k, v in re.findall(r"'?(\w+)'?=(\d+)", mesh.group(1)))
        return math.prod(sizes.get(a.strip("' "), 1) for a in mesh.group(2).split(",") if a.strip())
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attrs)
    if iota:
        return int(iota.group(2))
    explicit = re.search(r"replica_groups=\{\{([^}]*)\}", attrs)
    if explicit:
        return len(explicit.group(1).split(","))
    return num_devices


def collectives(comps, counts, num_devices: int) -> list[Collective]:
    """Every collective of the program, once. TPU's async collective fusion splits one collective
    into steps spread over several fusions, each holding a clone of the op with the same
    channel_id: a channel is one collective, counted once."""
    out, channels = [], set()
    for cname, instrs in comps.items():
        if cname == "__entry__" or not counts.get(cname):
            continue
        for ins in instrs.values():
            kind = ins.op.removesuffix("-start")
            if kind not in COLLECTIVES:
                continue
            channel = re.search(r"\bchannel_id=(\d+)", ins.attrs)
            if channel:
                if channel.group(1) in channels:
                    continue
                channels.add(channel.group(1))
            # Bytes moved per device: an all-gather's output, a reduce-scatter's input, an
            # all-reduce's operands (XLA combines many into one tuple: their sum). `-start` ops
            # return (input, output) tuples: take the larger.
            inputs = [a for o in ins.operands if o in instrs for a in instrs[o].shape]
            if ins.op.endswith("-start"):
                arrays = [max(ins.shape + inputs, key=lambda a: a.bytes)]
            else:
                arrays = inputs if kind == "reduce-scatter" and inputs else ins.shape
            big = max(arrays, key=lambda a: a.bytes)
            shape = str(big) + (f" + {len(arrays) - 1} more" if len(arrays) > 1 else "")
            op_name = re.search(r'op_name="([^"]*)"', ins.attrs)
            out.append(Collective(kind, shape, sum(a.bytes for a in arrays), _group_size(ins.attrs, num_devices), counts[cname],
                                  op_name.group(1)[:160] if op_name else "", tuple(map(str, arrays))))
    return sorted(out, key=lambda c: -c.bytes_per_step)


def _matmul_flops(ins: Instr, instrs: dict[str, Instr]) -> int:
    if not ins.shape:
        return 0
    out = math.prod(ins.shape[0].dims)
    operands = [instrs[o].shape[0] for o in ins.operands if o in instrs and instrs[o].shape]
    if ins.op == "dot" and operands:
        dims = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.attrs)
        k = math.prod(operands[0].dims[int(d)] for d in dims.group(1).split(",") if d) if dims else 1
        return 2 * out * k
    if ins.op == "convolution" and len(operands) == 2:
        labels = re.search(r"dim_labels=(\w+)_(\w+)->", ins.attrs)
        if not labels or "i" not in labels.group(2):
            return 0
        lhs_labels, rhs_labels = labels.groups()
        flops = 2 * out * operands[1].dims[rhs_labels.index("i")]
        # Spatial dims: taps per output that land on real inputs. XLA writes batched matmuls as
        # convolutions whose window mostly falls into lhs dilation holes or padding.
        window = re.search(r"size=([\dx]+)", ins.attrs)
        dilate = re.search(r"lhs_dilate=([\dx]+)", ins.attrs)
        sizes = [int(x) for x in window.group(1).split("x")] if window else []
        dil = [int(x) for x in dilate.group(1).split("x")] if dilate else [1] * len(sizes)
        spatial = [operands[0].dims[lhs_labels.index(str(d))] for d in range(len(sizes))]
        for size, d, n in zip(sizes, dil, spatial):
            flops *= min(-(-size // d), n)
        return flops
    return 0


def matmul_flops(comps, counts) -> tuple[int, dict[str, int]]:
    """Matmul FLOPs per call (every dot / convolution, weighted by runs), and per computation
    (one run each), for the loop correction of cost_analysis."""
    per_comp = {}
    for cname, instrs in comps.items():
        if cname != "__entry__":
            per_comp[cname] = sum(_matmul_flops(i, instrs) for i in instrs.values())
    return sum(f * counts.get(c, 0) for c, f in per_comp.items()), per_comp


def loop_extra_flops(comps) -> int:
    """Matmul FLOPs that cost_analysis misses: loop bodies run (trips - 1) more times than it counts."""
    counts, _ = run_counts(comps)
    once, _ = run_counts(comps, loops=False)
    return matmul_flops(comps, counts)[0] - matmul_flops(comps, once)[0]



# The HBM side of the model: what each op that runs reads and writes. Ops that move no data of
# their own: aliases and control flow (their bodies are counted); collectives go to the ICI model.
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "conditional", "call",
               "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain"}
_SLICING = ("dynamic-slice", "slice", "gather")


@dataclasses.dataclass
class OpCost:
    name: str
    op: str  # the HLO op; for a fusion, "fusion:<its largest fused op>"
    flops: int  # matmul FLOPs per run
    bytes: int  # HBM bytes read and written per run
    runs: int

    def seconds(self, peak_flops: float, hbm_bytes_per_s: float) -> float:
        """Roofline of one run: compute and memory traffic of the same op overlap."""
        return max(self.flops / peak_flops, self.bytes / hbm_bytes_per_s)


def _nbytes(arrays: list[Array]) -> int:
    """Bytes in device memory (HBM): arrays that TPU's memory-space assignment placed on-chip
    (VMEM, SMEM) move no HBM traffic."""
    return sum(a.bytes for a in arrays if a.space == 0)


def _nested(comps) -> set[str]:
    """Computations that run inside an op (fusion bodies, reducers, async wrappers), not as ops of their own."""
    out = set()
    for instrs in comps.values():
        for ins in instrs.values():
            for kind, callee in _CALLS.findall(ins.attrs):
                if kind in ("calls", "to_apply") and ins.op != "call":
                    out.add(callee)
    return out


def _moves_no_data(ins: Instr) -> bool:
    """Aliases, control flow and collectives. TPU's async collective fusions stay: they hold
    matmuls and write their results to HBM like any fusion (their ICI bytes count apart)."""
    base = ins.op.removesuffix("-start").removesuffix("-done")
    if ins.op in _NO_TRAFFIC or base in COLLECTIVES or ins.op.endswith("-done"):
        return True
    return base in ("send", "recv")


def _fusion_bytes(ins: Instr, instrs: dict[str, Instr], body: dict[str, Instr]) -> int:
    """One fusion's HBM bytes: every operand read once, except one that the fused computation only
    slices (a scanned layer's weights, one chunk of the batch: the slices are read) or updates in
    place (a dynamic-update-slice: only the update moves); the output written once, except an
    in-place update, which writes its update."""
    params = {int(i.args): i.name for i in body.values() if i.op == "parameter" and i.args.strip().isdigit()}
    users: dict[str, list[Instr]] = defaultdict(list)
    for i in body.values():
        for o in i.operands:
            users[o].append(i)
    total = 0
    for index, name in enumerate(ins.operands):
        full = _nbytes(instrs[name].shape) if name in instrs else 0
        uses = users.get(params.get(index, ""), [])
        if uses and all(u.op in _SLICING and u.operands[0] == params[index] for u in uses):
            total += min(full, sum(_nbytes(u.shape) for u in uses))
        elif uses and all(u.op == "dynamic-update-slice" and u.operands[0] == params[index] for u in uses):
            total += 0
        else:
            total += full
    updates = [i for i in body.values() if i.op == "dynamic-update-slice" and i.shape == ins.shape]
    if updates and updates[0].operands[1] in body:
        return total + _nbytes(body[updates[0].operands[1]].shape)
    return total + _nbytes(ins.shape)


def _fused_flops(comp: str, comps, seen=()) -> tuple[int, str]:
    """Matmul FLOPs inside a fused computation (nested fusions included) and its costliest op kind."""
    flops, kinds = 0, defaultdict(int)
    for ins in comps[comp].values():
        f = _matmul_flops(ins, comps[comp])
        flops += f
        kinds[ins.op] += f or _nbytes(ins.shape)
        callee = re.search(r"\bcalls=%?([\w.\-]+)", ins.attrs)
        if callee and callee.group(1) in comps and callee.group(1) not in seen:
            flops += _fused_flops(callee.group(1), comps, seen + (comp,))[0]
    kinds.pop("parameter", None)
    return flops, max(kinds, key=kinds.get) if kinds else ""


def op_costs(comps, counts) -> list[OpCost]:
    """Every op the program runs (fusions as one op), with its matmul FLOPs, HBM bytes and runs per call."""
    nested, out = _nested(comps), []
    for cname, instrs in comps.items():
        if cname == "__entry__" or cname in nested or not counts.get(cname):
            continue
        for ins in instrs.values():
            if _moves_no_data(ins):
                continue
            flops, op = _matmul_flops(ins, instrs), ins.op
            if ins.op == "fusion":
                body = _callee(ins)
                if body in comps:
                    flops, kind = _fused_flops(body, comps)
                    op, nbytes = f"fusion:{kind}", _fusion_bytes(ins, instrs, comps[body])
                else:
                    nbytes = _nbytes(ins.shape) + sum(_nbytes(instrs[o].shape) for o in ins.operands if o in instrs)
            elif ins.op in _SLICING:
                nbytes = 2 * _nbytes(ins.shape)
            elif ins.op == "copy-start":  # TPU's async copies between HBM and VMEM: (source, destination, context)
                nbytes = _nbytes(ins.shape[:2])
            elif ins.op == "slice-start":  # ((source), slice destination, context): reads the slice
                nbytes = ins.shape[-2].bytes + _nbytes(ins.shape[-2:-1])
            elif ins.op.endswith("-start"):  # an async call (TPU's SparseCore scatter): (operands, output, context)
                nbytes = _nbytes(ins.shape)
            elif ins.op == "dynamic-update-slice" and len(ins.operands) > 1 and ins.operands[1] in instrs:
                nbytes = 2 * _nbytes(instrs[ins.operands[1]].shape)
            else:
                nbytes = _nbytes(ins.shape) + sum(_nbytes(instrs[o].shape) for o in ins.operands if o in instrs)
            out.append(OpCost(ins.name, op, flops, nbytes, counts[cname]))
    return out


def _callee(ins: Instr) -> str | None:
    m = re.search(r"\bcalls=%?([\w.\-]+)", ins.attrs)
    return m.group(1) if m else None
