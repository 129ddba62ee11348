"""The workspace's own hygiene, read from its files: every dependency `[workspace.dependencies]`
pins is used by some member (a pin nothing uses drifts unnoticed), and every member listed
exists."""
import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_workspace_dependency_is_used_by_a_member():
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    members = [tomllib.loads((ROOT / m / "Cargo.toml").read_text()) for m in workspace["members"]]
    used = set()
    for m in members:
        for table in ("dependencies", "dev-dependencies", "build-dependencies"):
            for name, spec in m.get(table, {}).items():
                if isinstance(spec, dict) and spec.get("workspace"):
                    used.add(name)
    unused = sorted(set(workspace["dependencies"]) - used)
    assert not unused, f"[workspace.dependencies] pins what no member uses: {unused}"
    assert len(members) >= 10 and used, "read the members"


def test_every_path_the_repository_names_exists():
    """A reader follows the paths the docs, comments, compose files, Dockerfile and scripts
    name (`docker/build-image`, `tests/python/test_compose_stack.py`, ...): each must be in the
    repository. Globs and templated paths are patterns, not paths; test code names S3 keys."""
    import re
    import subprocess
    tops = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    scanned = [f for f in files if not f.startswith("tests/") and (
        f.endswith((".md", ".yml", ".yaml", ".toml", ".rs", ".proto", "Dockerfile")) or f.startswith(("scripts/", "docker/", ".ci/")))]
    assert len(scanned) > 100, scanned
    path = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, tops)) + r")/[\w./-]*[\w/])(-?\*)?")
    missing = {}
    for f in scanned:
        for m in path.finditer((ROOT / f).read_text(errors="replace")):
            named, glob = m.group(1), m.group(2)
            if glob or any(c in named for c in "{<$") or "..." in named:
                continue
            here = named.rstrip("/.")
            if not (ROOT / here).exists() and not (ROOT / f).parent.joinpath(here).exists():
                missing.setdefault(named, []).append(f)
    assert not missing, f"paths named but not in the repository: {missing}"


# Direct dependencies no source names, each for a reason a reader can check.
USED_WITHOUT_NAMING = {
    ("proto", "tonic-prost"): "the code tonic-prost-build generates into OUT_DIR uses its codec",
    ("proto", "prost-types"): "the generated code's google.protobuf.Timestamp",
}


def test_every_direct_dependency_is_used_by_its_crates_sources():
    """A dependency a crate declares and none of its sources use (src, tests, benches,
    build.rs, examples) is build time for nothing and a wrong map of what depends on what."""
    import re
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    unused = []
    checked = 0
    for member in workspace["members"]:
        crate = ROOT / member
        manifest = tomllib.loads((crate / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        sources = "\n".join(p.read_text(errors="replace") for p in crate.rglob("*.rs")
                            if "target" not in p.parts)
        for table in ("dependencies", "dev-dependencies", "build-dependencies"):
            for dep, spec in manifest.get(table, {}).items():
                lib = spec.get("package", dep) if isinstance(spec, dict) else dep
                ident = dep.replace("-", "_")
                checked += 1
                if (name, dep) in USED_WITHOUT_NAMING:
                    continue
                if not re.search(r"(?<![\w])" + re.escape(ident) + r"\s*(::|!|\{)|(?<![\w])(use|extern crate)\s+" + re.escape(ident) + r"\b|#\[" + re.escape(ident) + r"\b", sources):
                    unused.append(f"{member}: {table}.{dep}" + (f" (package {lib})" if lib != dep else ""))
    assert checked > 100, checked
    assert not unused, "declared, and no source of the crate uses it:\n  " + "\n  ".join(unused)


def test_the_configuration_reference_is_generated_from_the_binaries_help():
    """docs/configuration.md is what `python3 scripts/configuration.py` writes from each
    binary's --help; a flag added, renamed or re-defaulted without regenerating it fails here."""
    import subprocess
    import sys
    from conftest import binary
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "configuration.py"), "--check",
                          "--bin-dir", str(binary().parent)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
