#!/usr/bin/env python3
"""llama.cpp's tools, built once into the cache: the reference Swiftlet is checked and measured
against (bench/compare, bench/serve, and the tests that compare with llama.cpp).

The source is the llama-cpp-python sdist from PyPI (its vendor/llama.cpp); the build is native
(GGML_NATIVE) without AMX, with llama.cpp's tests configured so that `test-llama-archs` can be
built. Binaries land in $SWIFTLET_HOME/llama.cpp/<version>/build-native-noamx/bin.

usage: scripts/llama_cpp.py [TARGET ...]     builds the targets (default: the ones the tests use)
                                             and prints the bin folder
"""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HOME = Path(os.environ.get("SWIFTLET_HOME", Path.home() / ".cache" / "swiftlet"))
LLAMA_VERSION = "0.3.36"
LLAMA_DIR = HOME / "llama.cpp" / LLAMA_VERSION
# llama.cpp's AMX matmul (compiled in by GGML_NATIVE on CPUs with AMX-INT8, e.g. Sapphire Rapids)
# crashes in this version (SIGSEGV/SIGILL in ggml_backend_amx_mul_mat on both real models, while AMX
# itself works here), so the peer is its AVX-512 build: AMX switched off, everything else native.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
BUILD_DIR = LLAMA_DIR / "build-native-noamx"
SOURCE = LLAMA_DIR / f"llama_cpp_python-{LLAMA_VERSION}" / "vendor" / "llama.cpp"
TEST_TARGETS = ["llama-perplexity", "test-llama-archs", "llama-embedding", "llama-quantize", "llama-imatrix"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def fetch_source():
    """llama.cpp's source from the llama-cpp-python sdist on PyPI (once)."""
    if SOURCE.exists():
        return SOURCE
    LLAMA_DIR.mkdir(parents=True, exist_ok=True)
    sdist = LLAMA_DIR / f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"
    if not sdist.exists():
        log("downloading the llama-cpp-python sdist (llama.cpp's source) from PyPI")
        # pip prepares the sdist's metadata through scikit-build-core, which needs cmake
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "scikit-build-core"]
                       + ([] if shutil.which("cmake") else ["cmake"]), check=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", f"llama-cpp-python=={LLAMA_VERSION}", "-d", str(LLAMA_DIR)], check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(LLAMA_DIR)
    return SOURCE


def build_llama(target="llama-bench"):
    """Path of llama.cpp's `target` (llama-bench, llama-server, llama-perplexity,
    test-llama-archs, ...), building it first when the cache folder does not hold it yet."""
    binary = BUILD_DIR / "bin" / target
    if binary.exists():
        return binary
    source = fetch_source()
    if shutil.which("cmake") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "cmake"], check=True)
    log(f"building {target} (a few minutes on 2 cores)")
    cache = BUILD_DIR / "CMakeCache.txt"
    if not cache.exists() or any(f"{option}:BOOL=ON" not in cache.read_text()
                                 for option in ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES")):
        subprocess.run(["cmake", "-S", str(source), "-B", str(BUILD_DIR), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                        "-DGGML_NATIVE=ON", "-DLLAMA_BUILD_TESTS=ON", "-DLLAMA_BUILD_EXAMPLES=ON",
                        "-DLLAMA_BUILD_SERVER=ON",
                        f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(BUILD_DIR), "-j", str(os.cpu_count() or 2), "--target", target],
                   check=True, stdout=subprocess.DEVNULL)
    return binary


def requantized(source, file_type):
    """`source` (a GGUF model) as llama-quantize writes it in `file_type` (IQ4_XS, Q4_K_M, ...),
    from an F32 copy of it, cached in $SWIFTLET_HOME/requantized/llama.cpp-<version>/ (the folder
    and names the tests use for the same files)."""
    folder = HOME / "requantized" / f"llama.cpp-{LLAMA_VERSION}"
    output = folder / f"{Path(source).name.split('.')[0]}.{file_type}.gguf"
    if output.exists():
        return output
    folder.mkdir(parents=True, exist_ok=True)
    quantize = build_llama("llama-quantize")
    f32 = folder / f"{output.name}.f32-{os.getpid()}"
    partial = folder / f"{output.name}.partial-{os.getpid()}"
    try:
        log(f"quantizing {Path(source).name} to {file_type} with llama-quantize")
        subprocess.run([str(quantize), "--allow-requantize", str(source), str(f32), "F32"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([str(quantize), str(f32), str(partial), file_type], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        partial.rename(output)
    finally:
        f32.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return output


if __name__ == "__main__":
    for t in sys.argv[1:] or TEST_TARGETS:
        build_llama(t)
    print(BUILD_DIR / "bin")
