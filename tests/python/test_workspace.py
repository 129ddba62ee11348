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
