"""Registers, spills and shared memory of every GPU kernel entry, as ptxas reports them.

    python benchmarks/ptxas_report.py [--arch sm_80 --arch sm_90] [--json report.json] [--fail-on-spill]

Runs ``nvcc -x cu -std=c++17 -arch=<arch> -Xptxas -v -c -I kernels`` on every kernels/*.cu
(no GPU needed) and parses ptxas's per-entry lines:

    ptxas info    : Compiling entry function 'patch_fwd_f32' for 'sm_90'
    ptxas info    : Function properties for patch_fwd_f32
        0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
    ptxas info    : Used 32 registers, used 0 barriers, 4096 bytes smem, 392 bytes cmem[0]

(the last line's fields vary between CUDA versions; each is parsed on its own). Registers above
64 per thread limit occupancy at 256 threads per block (65536 registers per SM on sm_80/sm_90
= 4 blocks of 256 threads at 64 registers); any spill goes to local memory.

Exit status: 0 on success, 1 if a file does not compile (or spills with --fail-on-spill),
2 if nvcc is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARCHS = ("sm_80", "sm_90")

_COMPILING = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_FIELDS = {"barriers": re.compile(r"used (\d+) barriers"),
           "smem_bytes": re.compile(r"(\d+) bytes smem"),
           "cmem0_bytes": re.compile(r"(\d+) bytes cmem\[0\]")}


def find_nvcc(explicit: str | None) -> str | None:
    if explicit:
        return explicit if shutil.which(explicit) else None
    found = shutil.which("nvcc")
    if found:
        return found
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidate = Path(os.environ[var]) / "bin" / "nvcc"
            if candidate.is_file():
                return str(candidate)
    return None


def parse_ptxas(text: str) -> list[dict]:
    """Per-entry resource usage from `-Xptxas -v` output (entries only, not device functions)."""
    entries: dict[str, dict] = {}
    current = None  # the function the following property lines describe
    for line in text.splitlines():
        if m := _COMPILING.search(line):
            current = entries.setdefault(m.group(1), {"entry": m.group(1), "arch": m.group(2)})
        elif m := _PROPERTIES.search(line):
            current = entries.get(m.group(1))  # None for a non-inlined device function
        elif current is not None and (m := _FRAME.search(line)):
            current["stack_bytes"], current["spill_store_bytes"], current["spill_load_bytes"] = map(int, m.groups())
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m.group(1))
            for key, pattern in _FIELDS.items():
                f = pattern.search(line)
                current[key] = int(f.group(1)) if f else 0
    return list(entries.values())


def compile_one(nvcc: str, source: Path, arch: str, kernels: Path, workdir: Path) -> tuple[list[dict], str | None]:
    out = workdir / f"{source.stem}-{arch}.o"
    cmd = [nvcc, "-x", "cu", "-std=c++17", f"-arch={arch}", "-Xptxas", "-v", "-c", "-I", str(kernels),
           str(source), "-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        return [], f"{' '.join(cmd)}\n{run.stdout}{run.stderr}"
    rows = parse_ptxas(run.stdout + run.stderr)
    for row in rows:
        row["file"] = source.name
    return rows, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help=f"target (repeatable; default {' '.join(DEFAULT_ARCHS)})")
    parser.add_argument("--kernels", type=Path, default=ROOT / "kernels", help="kernel source folder")
    parser.add_argument("--nvcc", help="nvcc to use (default: PATH, then $CUDA_HOME/bin)")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    parser.add_argument("--fail-on-spill", action="store_true", help="exit 1 if any entry spills")
    args = parser.parse_args(argv)
    archs = args.arch or list(DEFAULT_ARCHS)

    nvcc = find_nvcc(args.nvcc)
    if nvcc is None:
        print("ptxas_report: nvcc not found (put the CUDA toolkit's bin/ on PATH, set CUDA_HOME, "
              "or pass --nvcc)", file=sys.stderr)
        return 2
    sources = sorted(args.kernels.glob("*.cu"))
    if not sources:
        print(f"ptxas_report: no *.cu files in {args.kernels}", file=sys.stderr)
        return 1
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()

    jobs = [(s, a) for s in sources for a in archs]
    with tempfile.TemporaryDirectory(prefix="ptxas-report-") as tmp, \
            ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda job: compile_one(nvcc, job[0], job[1], args.kernels, Path(tmp)), jobs))
    rows = [row for found, _ in results for row in found]
    failures = [err for _, err in results if err]

    rows.sort(key=lambda r: (r["file"], r["entry"], r["arch"]))
    header = ("file", "entry", "arch", "regs", "stack", "spill st", "spill ld", "smem", "barriers")
    table = [header] + [(r["file"], r["entry"], r["arch"], r.get("registers", "?"), r.get("stack_bytes", "?"),
                         r.get("spill_store_bytes", "?"), r.get("spill_load_bytes", "?"), r.get("smem_bytes", "?"),
                         r.get("barriers", "?")) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    release = next((line for line in version if "release" in line), nvcc)
    print(f"{release}; nvcc -x cu -std=c++17 -arch=ARCH -Xptxas -v -c -I {args.kernels}; "
          "stack/spills/smem in bytes")
    for i, row in enumerate(table):
        print("  ".join(str(c).ljust(w) if j < 3 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    spilling = [f"{r['entry']} ({r['arch']})" for r in rows
                if r.get("spill_store_bytes", 0) or r.get("spill_load_bytes", 0)]
    print(f"{len(rows)} entries; spills: {', '.join(spilling) if spilling else 'none'}")

    if args.json:
        args.json.write_text(json.dumps({"nvcc": version, "archs": archs, "entries": rows}, indent=1) + "\n")
    for err in failures:
        print(f"ptxas_report: compilation failed:\n{err}", file=sys.stderr)
    return 1 if failures or (args.fail_on_spill and spilling) else 0


if __name__ == "__main__":
    sys.exit(main())
