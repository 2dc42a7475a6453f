#!/usr/bin/env bash
# Installs the LLVM that burn's CUDA backend links (cubecl-cuda -> cubecl-llvm ->
# tracel-llvm-bundler 23.1.0-4) from PyPI, for build machines that reach package registries
# (PyPI, crates.io) but not GitHub, from which the bundler's build script downloads it.
#
#   scripts/llvm-bundle.sh [--dest DIR] [--wheels DIR] [--force] [--link-test]
#   scripts/llvm-bundle.sh --download-only DIR
#
# Run `scripts/llvm-bundle.sh --help` for the options. What it does: the bundler's build script
# downloads nothing when <data dir>/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed exists,
# and afterwards asks that directory's bin/llvm-config (run as `llvm-config --link-static ARG`)
# for --libdir, --includedir, --libs, --system-libs and --cxxflags. The PyPI wheels
# mlc-llvm-static and mlc-llvm-static-extra-targets 23.1.1.post0 (static PIC archives of
# LLVM 23.1.1, its headers, and a Python llvm-config that understands --link-static; the second
# wheel adds the non-host targets, NVPTX among them) hold all of it under
# mlc_llvm_static/static/{bin,include,lib,share}; this script checks them against pinned sha256
# sums, lays that tree out in the directory above, checks it with llvm-config and writes the
# sentinel. Their llvm-config finds its prefix from its own path, so the tree can be moved, and
# it runs under `#!/usr/bin/env python3`: python3 (3.7 or newer) has to be on PATH when cargo
# builds. Linux on x86-64 or aarch64 only.
set -euo pipefail

readonly BUNDLE_NAME="tracel-llvm-23.1.0-4"
readonly SENTINEL=".tracel-llvm-installed"
readonly MLC_VERSION="23.1.1.post0"
readonly LLVM_SERIES="23.1"

usage() {
  cat <<EOF
Usage: scripts/llvm-bundle.sh [OPTIONS]

Installs LLVM ${LLVM_SERIES} (PyPI wheels mlc-llvm-static and mlc-llvm-static-extra-targets
${MLC_VERSION}) where tracel-llvm-bundler 23.1.0-4 looks for its bundle, so that
\`cargo build --release -p fourm --features cuda\` needs no download from GitHub.

Options:
  --dest DIR           install there instead of the bundler's directory,
                       \${XDG_DATA_HOME:-\$HOME/.local/share}/tracel/${BUNDLE_NAME}
                       (currently: $(default_dest 2>/dev/null || echo '?'))
  --wheels DIR         take the two wheels from DIR instead of downloading them
                       (for machines without network; get them with --download-only)
  --download-only DIR  download and check the two wheels for this machine's architecture
                       into DIR, and install nothing
  --force              rebuild the directory even if it is already complete
  --link-test          also compile and link a small program against the result (needs cc
                       and c++) that emits PTX for a kernel through LLVM's C API; takes a
                       minute or so
  -h, --help           show this text

Environment:
  FOURM_PIP            pip command used to download (default: python3 -m pip; falls back to
                       curl from files.pythonhosted.org when pip is missing or fails)
  FOURM_LLVM_PYTHON    absolute path of a python3 to write into llvm-config's shebang
                       (default: keep \`#!/usr/bin/env python3\`)

Wheels are checked against pinned sha256 sums before they are unpacked. The directory is built
next to the destination and moved into place when it is complete and checked.
EOF
}

say() { printf 'llvm-bundle: %s\n' "$*"; }
warn() { printf 'llvm-bundle: warning: %s\n' "$*" >&2; }
die() {
  printf 'llvm-bundle: error: %s\n' "$*" >&2
  exit 1
}

# dirs::data_local_dir() on Linux: $XDG_DATA_HOME when absolute, else $HOME/.local/share.
default_dest() {
  local data_home="${XDG_DATA_HOME:-}"
  if [[ "$data_home" != /* ]]; then
    local home="${HOME:-}"
    if [[ -z "$home" ]]; then
      home="$(getent passwd "$(id -u)" | cut -d: -f6)"
    fi
    [[ -n "$home" ]] || die "cannot tell the home directory (HOME is unset)"
    data_home="$home/.local/share"
  fi
  printf '%s/tracel/%s\n' "$data_home" "$BUNDLE_NAME"
}

dest=""
wheels_dir=""
download_only=""
force=0
link_test=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dest) [[ $# -ge 2 ]] || die "--dest needs a directory"; dest="$2"; shift 2 ;;
    --dest=*) dest="${1#*=}"; shift ;;
    --wheels) [[ $# -ge 2 ]] || die "--wheels needs a directory"; wheels_dir="$2"; shift 2 ;;
    --wheels=*) wheels_dir="${1#*=}"; shift ;;
    --download-only) [[ $# -ge 2 ]] || die "--download-only needs a directory"; download_only="$2"; shift 2 ;;
    --download-only=*) download_only="${1#*=}"; shift ;;
    --force) force=1; shift ;;
    --link-test) link_test=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ -z "$wheels_dir" || -z "$download_only" ]] || die "--wheels and --download-only exclude each other"

# --- platform and pins -------------------------------------------------------------------------

[[ "$(uname -s)" == Linux ]] || die "only Linux is supported (this is $(uname -s)); the wheels used here are manylinux ones"
case "$(uname -m)" in
  x86_64 | amd64) arch="x86_64" ;;
  aarch64 | arm64) arch="aarch64" ;;
  *) die "only x86_64 and aarch64 are supported (this machine is $(uname -m))" ;;
esac

base_whl="mlc_llvm_static-${MLC_VERSION}-py3-none-manylinux_2_28_${arch}.whl"
extra_whl="mlc_llvm_static_extra_targets-${MLC_VERSION}-py3-none-manylinux_2_28_${arch}.whl"
# sha256 from https://pypi.org/simple/<name>/; URLs are PyPI's (content-addressed) file URLs.
case "$arch" in
  x86_64)
    base_sha="dcfec888abfaa418be77d41af585805f31463584cf9c90582992c00f392c1ac5"
    extra_sha="c36e834d9a4e9cf9759f27fece65711ece7a2fc2b5a96dbb15d66f5e9e787929"
    base_url="https://files.pythonhosted.org/packages/f2/5b/d56874d8db6254df64387be5569beb298180d0cf1571552124bcd4bb1f7d/$base_whl"
    extra_url="https://files.pythonhosted.org/packages/ee/a9/9bba32af266ac0451f4c6170078e4000f5456ce257920c77fe6a7bd13435/$extra_whl"
    ;;
  aarch64)
    base_sha="3d4b1b30cea531ffa5956fa14ff4ffb0b1ed61284bf31eac3ebb752fb308b71d"
    extra_sha="b1ddc694cf75bb1502b64c1898b15915362450453b637534886519e20e3d5522"
    base_url="https://files.pythonhosted.org/packages/fa/c1/3590911381a23bae8b12fa4c15dcf5b39d1d398fd4ae20f3de1cb0e61611/$base_whl"
    extra_url="https://files.pythonhosted.org/packages/fd/21/f9d02c19215477bf33804c138006dd6a3b9f645963150948cefac3f23798/$extra_whl"
    ;;
esac

need() { command -v "$1" >/dev/null 2>&1 || die "$1 is needed${2:+ ($2)}"; }
need sha256sum

# --- wheels ------------------------------------------------------------------------------------

# verify FILE SHA: fails (and says why) unless FILE exists with that sha256.
verify() {
  local file="$1" want="$2" got
  [[ -f "$file" ]] || die "missing wheel: $file"
  got="$(sha256sum -- "$file" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    die "sha256 mismatch for $file
  expected: $want
  got:      $got
(a corrupt or different file; delete it and download again)"
  fi
  say "sha256 ok: $(basename -- "$file") ($(du -h -- "$file" | cut -f1))"
}

download_with_pip() {
  local dir="$1" req="$1/.requirements.txt"
  local -a pip
  if [[ -n "${FOURM_PIP:-}" ]]; then
    read -r -a pip <<<"$FOURM_PIP"
  else
    pip=(python3 -m pip)
    command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 || return 1
  fi
  printf '%s\n' \
    "mlc-llvm-static==${MLC_VERSION} --hash=sha256:${base_sha}" \
    "mlc-llvm-static-extra-targets==${MLC_VERSION} --hash=sha256:${extra_sha}" >"$req"
  say "downloading with ${pip[*]} (PyPI or the index pip is configured with)"
  # --platform/--python-version/--implementation/--abi: the wheels are py3-none, so this works
  # whatever the local Python is.
  local rc=0
  "${pip[@]}" download --no-deps --require-hashes --only-binary=:all: \
    --platform "manylinux_2_28_${arch}" --python-version 3.11 --implementation py --abi none \
    --disable-pip-version-check --progress-bar off --dest "$dir" -r "$req" || rc=$?
  rm -f -- "$req"
  return "$rc"
}

download_with_curl() {
  local dir="$1" url name
  need curl "to download the wheels without pip"
  for url in "$base_url" "$extra_url"; do
    name="${url##*/}"
    say "downloading $url"
    curl -fsSL --retry 3 --proto '=https' -o "$dir/$name.part" "$url" || die "download failed: $url"
    mv -f -- "$dir/$name.part" "$dir/$name"
  done
}

# fetch_wheels DIR: both wheels in DIR, checked.
fetch_wheels() {
  local dir="$1"
  mkdir -p -- "$dir"
  if [[ -f "$dir/$base_whl" && -f "$dir/$extra_whl" ]] &&
    [[ "$(sha256sum -- "$dir/$base_whl" | cut -d' ' -f1)" == "$base_sha" ]] &&
    [[ "$(sha256sum -- "$dir/$extra_whl" | cut -d' ' -f1)" == "$extra_sha" ]]; then
    say "wheels already in $dir"
  elif ! download_with_pip "$dir"; then
    [[ -z "${FOURM_PIP:-}" ]] || die "download with FOURM_PIP=$FOURM_PIP failed"
    warn "no working pip download (python3 -m pip); trying curl from files.pythonhosted.org"
    download_with_curl "$dir"
  fi
  verify "$dir/$base_whl" "$base_sha"
  verify "$dir/$extra_whl" "$extra_sha"
}

if [[ -n "$download_only" ]]; then
  fetch_wheels "$download_only"
  say "wheels for $arch are in $download_only; install with: scripts/llvm-bundle.sh --wheels $download_only"
  exit 0
fi

# --- destination -------------------------------------------------------------------------------

bundler_dest="$(default_dest)"
dest="${dest:-$bundler_dest}"
dest="$(realpath -m -- "$dest")"

llvm_config() { "$1/bin/llvm-config" --link-static "${@:2}"; }

# complete DIR: what the bundler and its llvm-config queries rely on is there.
complete() {
  local dir="$1" lib
  [[ -f "$dir/$SENTINEL" && -x "$dir/bin/llvm-config" && -d "$dir/include" ]] || return 1
  for lib in "$dir"/lib/libLLVM*.a; do
    [[ -f "$lib" ]] && return 0
  done
  return 1
}

if [[ $force -eq 0 ]] && complete "$dest"; then
  if version="$(llvm_config "$dest" --version 2>/dev/null)"; then
    say "already installed: $dest (LLVM $version); nothing to do (--force rebuilds it)"
  else
    warn "$dest is complete but its bin/llvm-config does not run (is python3 on PATH?); --force rebuilds it"
    say "already installed: $dest; nothing to do"
  fi
  exit 0
fi
if [[ -e "$dest" && $force -eq 0 ]]; then
  say "$dest exists but is incomplete; rebuilding it"
fi

need python3 "llvm-config is a Python script, and cargo runs it"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 7))' ||
  die "python3 $(python3 -c 'import platform; print(platform.python_version())') is too old: llvm-config needs 3.7 or newer"
if [[ -n "${FOURM_LLVM_PYTHON:-}" ]]; then
  [[ "$FOURM_LLVM_PYTHON" == /* && -x "$FOURM_LLVM_PYTHON" ]] ||
    die "FOURM_LLVM_PYTHON must be the absolute path of an executable python3"
fi
glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d' ' -f2 || true)"
if [[ -n "$glibc" ]] && ! printf '2.28\n%s\n' "$glibc" | sort -C -V; then
  warn "glibc $glibc is older than 2.28, which these manylinux_2_28 archives were built for; linking may fail"
fi

start=$SECONDS
parent="$(dirname -- "$dest")"
mkdir -p -- "$parent"
work=""
moved_in=0
cleanup() {
  local rc=$?
  if [[ $rc -ne 0 && $moved_in -eq 1 ]]; then
    # Moved into place but failed its checks afterwards: never leave it looking installed.
    rm -f -- "$dest/$SENTINEL"
  fi
  if [[ -n "$work" && -d "$work" ]]; then
    rm -rf -- "$work"
  fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A sibling of the destination, so that the final move is a rename on the same file system.
work="$(mktemp -d -- "$parent/.${BUNDLE_NAME}.tmp.XXXXXX")"

if [[ -n "$wheels_dir" ]]; then
  [[ -d "$wheels_dir" ]] || die "--wheels: no such directory: $wheels_dir"
  for w in "$base_whl" "$extra_whl"; do
    [[ -f "$wheels_dir/$w" ]] || die "--wheels: $wheels_dir has no $w (get it with --download-only DIR on a machine with network)"
  done
  verify "$wheels_dir/$base_whl" "$base_sha"
  verify "$wheels_dir/$extra_whl" "$extra_sha"
  whl_dir="$wheels_dir"
else
  whl_dir="$work/wheels"
  fetch_wheels "$whl_dir"
fi

# --- unpack and lay out ------------------------------------------------------------------------

unpack() {
  local whl="$1" into="$2"
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o -- "$whl" -d "$into"
  else
    python3 -m zipfile -e "$whl" "$into"
  fi
}

say "unpacking"
unpacked="$work/unpacked"
mkdir -p -- "$unpacked"
# Both wheels put their files under mlc_llvm_static/static/ (the SDK prefix: bin/, include/,
# lib/, share/) and share no file, so unpacking both into one directory merges them.
unpack "$whl_dir/$base_whl" "$unpacked"
unpack "$whl_dir/$extra_whl" "$unpacked"

mapfile -t configs < <(find "$unpacked" -type f -path '*/bin/llvm-config' -print)
[[ ${#configs[@]} -eq 1 ]] ||
  die "expected one bin/llvm-config in the wheels, found ${#configs[@]}: ${configs[*]:-none}"
sdk="$(dirname -- "$(dirname -- "${configs[0]}")")"
for d in include lib share/mlc-llvm-static; do
  [[ -d "$sdk/$d" ]] || die "the wheels have no $d/ next to bin/ (in ${sdk#"$work"/})"
done
[[ -f "$sdk/share/mlc-llvm-static/extra.json" ]] ||
  die "the extra-targets wheel did not land in the same prefix as the base wheel (no share/mlc-llvm-static/extra.json in ${sdk#"$work"/})"
say "SDK prefix in the wheels: ${sdk#"$unpacked"/}/"

bundle="$work/bundle"
mv -T -- "$sdk" "$bundle"
if [[ -d "$(dirname -- "$sdk")/licenses" ]]; then
  mv -T -- "$(dirname -- "$sdk")/licenses" "$bundle/share/mlc-llvm-static/licenses"
fi
rm -rf -- "$unpacked"

chmod 0755 "$bundle/bin/llvm-config"
first_line="$(head -n1 -- "$bundle/bin/llvm-config")"
[[ "$first_line" == '#!'*python* ]] ||
  die "bin/llvm-config is not the expected Python script (first line: $first_line)"
if [[ -n "${FOURM_LLVM_PYTHON:-}" ]]; then
  sed -i "1s|.*|#!$FOURM_LLVM_PYTHON|" "$bundle/bin/llvm-config"
fi

# --- checks ------------------------------------------------------------------------------------

# check DIR: the llvm-config queries tracel-llvm-bundler makes (config.rs, always with
# --link-static), answered from DIR itself.
check() {
  local dir="$1" prefix version targets libdir includedir libs syslibs cxxflags lib n=0
  prefix="$(llvm_config "$dir" --prefix)" || die "$dir/bin/llvm-config --link-static --prefix failed"
  [[ "$prefix" == "$(realpath -- "$dir")" ]] ||
    die "llvm-config reports the prefix $prefix, not $dir (paths baked in?)"
  version="$(llvm_config "$dir" --version)"
  [[ "$version" == "$LLVM_SERIES".* ]] || die "llvm-config --version says $version, not $LLVM_SERIES.x"
  targets="$(llvm_config "$dir" --targets-built)"
  [[ " $targets " == *" NVPTX "* ]] || die "NVPTX is not among the built targets: $targets"
  libdir="$(llvm_config "$dir" --libdir)"
  [[ "$libdir" == "$prefix/lib" && -d "$libdir" ]] || die "bad --libdir: $libdir"
  includedir="$(llvm_config "$dir" --includedir)"
  [[ "$includedir" == "$prefix/include" && -f "$includedir/llvm-c/Target.h" ]] ||
    die "bad --includedir: $includedir"
  libs="$(llvm_config "$dir" --libs)"
  for lib in $libs; do
    [[ "$lib" == -l* && -f "$libdir/lib${lib#-l}.a" ]] || die "--libs names $lib, which is not in $libdir"
    n=$((n + 1))
  done
  [[ " $libs " == *" -lLLVMNVPTXCodeGen "* ]] || die "--libs lacks LLVMNVPTXCodeGen"
  llvm_config "$dir" --libnames >/dev/null
  syslibs="$(llvm_config "$dir" --system-libs)"
  cxxflags="$(llvm_config "$dir" --cxxflags)"
  [[ "$cxxflags" == "-I$includedir "* ]] || die "--cxxflags does not start with -I$includedir: $cxxflags"
  llvm_config "$dir" --cflags >/dev/null
  checked_version="$version"
  checked_summary="  llvm-config --link-static --version       $version
  llvm-config --link-static --prefix        $prefix
  llvm-config --link-static --libdir        $libdir
  llvm-config --link-static --includedir    $includedir
  llvm-config --link-static --targets-built $targets
  llvm-config --link-static --libs          $n static archives ($(cut -c1-60 <<<"$libs")...)
  llvm-config --link-static --system-libs   $syslibs
  llvm-config --link-static --cxxflags      $cxxflags"
}

# link_test DIR: a C program (LLVM's C API, as cubecl-llvm uses it through llvm-sys) and a C++
# file built with --cxxflags (as cubecl-llvm's shims are), linked the way the bundler links.
link_test() {
  local dir="$1" t="$work/link-test" cc="${CC:-cc}" cxx="${CXX:-c++}" out
  local -a cxxflags libs syslibs
  need "$cc" "for --link-test"
  need "$cxx" "for --link-test"
  mkdir -p -- "$t"
  cat >"$t/main.c" <<'EOF'
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <stdio.h>
#include <string.h>

int shim_has_option(const char *name);

int main(void) {
  const char *triple = "nvptx64-nvidia-cuda";
  char *error = NULL;
  LLVMInitializeAllTargetInfos();
  LLVMInitializeAllTargets();
  LLVMInitializeAllTargetMCs();
  LLVMInitializeAllAsmPrinters();
  LLVMContextRef context = LLVMContextCreate();
  LLVMModuleRef module = LLVMModuleCreateWithNameInContext("smoke", context);
  LLVMSetTarget(module, triple);
  LLVMValueRef kernel = LLVMAddFunction(
      module, "smoke_kernel", LLVMFunctionType(LLVMVoidTypeInContext(context), NULL, 0, 0));
  LLVMSetFunctionCallConv(kernel, LLVMPTXKernelCallConv);
  LLVMBuilderRef builder = LLVMCreateBuilderInContext(context);
  LLVMPositionBuilderAtEnd(builder, LLVMAppendBasicBlockInContext(context, kernel, "entry"));
  LLVMBuildRetVoid(builder);
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &error)) {
    fprintf(stderr, "no NVPTX target: %s\n", error);
    return 1;
  }
  LLVMTargetMachineRef machine = LLVMCreateTargetMachine(
      target, triple, "sm_80", "", LLVMCodeGenLevelDefault, LLVMRelocDefault, LLVMCodeModelDefault);
  LLVMMemoryBufferRef ptx;
  if (LLVMTargetMachineEmitToMemoryBuffer(machine, module, LLVMAssemblyFile, &error, &ptx)) {
    fprintf(stderr, "PTX emission failed: %s\n", error);
    return 1;
  }
  fwrite(LLVMGetBufferStart(ptx), 1, LLVMGetBufferSize(ptx), stdout);
  if (!shim_has_option("nvptx-sched4reg")) {
    fprintf(stderr, "the C++ shim does not see NVPTX's command-line options\n");
    return 1;
  }
  return 0;
}
EOF
  cat >"$t/shim.cpp" <<'EOF'
#include <llvm/Bitcode/BitcodeReader.h>
#include <llvm/IR/Module.h>
#include <llvm/Linker/Linker.h>
#include <llvm/Support/CommandLine.h>

extern "C" int shim_has_option(const char *name) {
  auto &options = llvm::cl::getRegisteredOptions();
  return options.find(name) != options.end();
}
EOF
  read -r -a cxxflags <<<"$(llvm_config "$dir" --cxxflags)"
  read -r -a libs <<<"$(llvm_config "$dir" --libs)"
  read -r -a syslibs <<<"$(llvm_config "$dir" --system-libs)"
  say "link test: compiling and linking against $dir (takes a while)"
  "$cc" -O1 -I"$(llvm_config "$dir" --includedir)" -c "$t/main.c" -o "$t/main.o"
  "$cxx" "${cxxflags[@]}" -O1 -c "$t/shim.cpp" -o "$t/shim.o"
  "$cxx" "$t/main.o" "$t/shim.o" -L"$(llvm_config "$dir" --libdir)" "${libs[@]}" "${syslibs[@]}" \
    -lstdc++ -o "$t/smoke"
  out="$("$t/smoke")" || die "link test: the program failed"
  if ! grep -q '\.entry smoke_kernel' <<<"$out" || ! grep -q '\.target sm_80' <<<"$out"; then
    die "link test: unexpected PTX: $out"
  fi
  say "link test ok: $(grep -m1 '^\.version' <<<"$out" || true) $(grep -m1 '^\.target' <<<"$out") .entry smoke_kernel ($(du -h -- "$t/smoke" | cut -f1) binary)"
  rm -rf -- "$t"
}

say "checking the bundle with its llvm-config"
check "$bundle"
if [[ $link_test -eq 1 ]]; then
  link_test "$bundle"
fi

# --- install -----------------------------------------------------------------------------------

touch -- "$bundle/$SENTINEL"
if [[ -e "$dest" || -L "$dest" ]]; then
  mv -T -- "$dest" "$work/old"
fi
mv -T -- "$bundle" "$dest"
moved_in=1
# Same queries from the final place: every path must now point into $dest.
check "$dest"
moved_in=0
rm -rf -- "$work"

say "installed LLVM $checked_version (mlc-llvm-static $MLC_VERSION, $arch) in $dest"
say "size: $(du -sh -- "$dest" | cut -f1)  (took $((SECONDS - start)) s)"
printf '%s\n' "$checked_summary"
if [[ "$dest" != "$(realpath -m -- "$bundler_dest")" ]]; then
  warn "tracel-llvm-bundler looks in $bundler_dest, not in $dest"
fi
