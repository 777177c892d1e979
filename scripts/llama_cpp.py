#!/usr/bin/env python3
"""llama.cpp's tools, built once into the cache: the reference Swiftlet is checked and measured
against (bench/compare, bench/serve, and the tests that compare with llama.cpp).

The source is the llama-cpp-python sdist from PyPI (its vendor/llama.cpp); the build is native
(GGML_NATIVE) without AMX, with llama.cpp's tests configured so that `test-llama-archs` can be
built. Binaries land in $SWIFTLET_HOME/llama.cpp/<version>/build-native-noamx/bin. A second
build, build-avx2, targets an AVX2-only x86 CPU (no AVX-512, VNNI or AMX), so that an AVX-512
machine can measure llama.cpp as it runs on AVX2 machines.

usage: scripts/llama_cpp.py [--isa native|avx2] [TARGET ...]
                                 builds the targets (default: the ones the tests use) and prints
                                 the bin folder
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
# An AVX2-only x86 CPU (Haswell, Zen 2): the instruction sets spelled out, because GGML_NATIVE
# would follow the build machine; GGML_CPU_ALL_VARIANTS/GGML_BACKEND_DL stay off, or ggml would
# load its AVX-512 variant at run time.
AVX2_DIR = LLAMA_DIR / "build-avx2"
AVX2_OPTIONS = ["-DGGML_NATIVE=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF", "-DGGML_BACKEND_DL=OFF"] + [
    f"-DGGML_{option}=ON" for option in ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")] + [
    f"-DGGML_{option}=OFF" for option in ("AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16",
                                          "AMX_TILE", "AMX_INT8", "AMX_BF16")]
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


def build_folder(isa):
    """The build for this CPU ("native") or for an AVX2-only one ("avx2")."""
    if isa not in ("native", "avx2"):
        raise ValueError(f"unknown isa {isa}: native or avx2")
    return BUILD_DIR if isa == "native" else AVX2_DIR


def build_llama(target="llama-bench", isa="native"):
    """Path of llama.cpp's `target` (llama-bench, llama-server, llama-perplexity,
    test-llama-archs, ...) in the `isa` build (`build_folder`), building it first when the
    cache folder does not hold it yet."""
    build_dir = build_folder(isa)
    binary = build_dir / "bin" / target
    if binary.exists():
        return binary
    source = fetch_source()
    if shutil.which("cmake") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "cmake"], check=True)
    log(f"building {target} for {isa} (a few minutes on 2 cores)")
    cache = build_dir / "CMakeCache.txt"
    if not cache.exists() or any(f"{option}:BOOL=ON" not in cache.read_text()
                                 for option in ("LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES")):
        options = (["-DGGML_NATIVE=ON", f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"] if isa == "native"
                   else AVX2_OPTIONS)
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                        "-DLLAMA_BUILD_TESTS=ON", "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_SERVER=ON"] + options,
                       check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "-j", str(os.cpu_count() or 2), "--target", target],
                   check=True, stdout=subprocess.DEVNULL)
    return binary


def system_info(isa="native"):
    """llama.cpp's system_info line of the `isa` build (the CPU features its ggml was compiled
    with: "AVX512 = 1" and the like appear only when they are), read from its libllama."""
    import ctypes
    library = ctypes.CDLL(str(build_folder(isa) / "bin" / "libllama.so"))
    library.llama_print_system_info.restype = ctypes.c_char_p
    return library.llama_print_system_info().decode().strip()


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
    args, isa = sys.argv[1:], "native"
    if args[:1] == ["--isa"] and len(args) > 1:
        args, isa = args[2:], args[1]
    for t in args or TEST_TARGETS:
        binary = build_llama(t, isa)
    print(binary.parent)
