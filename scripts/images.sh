#!/usr/bin/env bash
# Builds the project's container images WITHOUT a Docker engine, as image archives (the tarball
# format `docker save` writes, OCI media types) that `crane push`, `docker load`, `podman load` and
# `kind load image-archive` accept:
#
#   ghcr.io/caduceus-health/caduceus-operator:<version>            ENTRYPOINT caduceus-operator, CMD run
#   ghcr.io/caduceus-health/caduceus-api:<version>                 ENTRYPOINT caduceus-api, CMD serve
#   ghcr.io/caduceus-health/caduceus-backup:<version>-pg<major>    ENTRYPOINT caduceus-backup, with
#                                                                  pg_dump/pg_restore of <major>
#
# <version> is the workspace version (Cargo.toml); the backup image is built for every major in
# BACKUP_PG_MAJORS below, which must hold the operator's default (DEFAULT_POSTGRES_VERSION in
# operator/src/crd/mod.rs): the operator runs `caduceus-backup:<version>-pg<database major>`.
#
# Each image is one layer on an empty base: the static binary (glibc linked statically:
# RUSTFLAGS=-C target-feature=+crt-static, cargo --target <host triple>), /etc/passwd and
# /etc/group naming uid/gid 65532 "nonroot", /tmp, the Mozilla CA bundle of Debian's
# ca-certificates package, and for the backup image Debian's pg_dump/pg_restore with exactly the
# shared libraries they load (resolved with the packages' own dynamic loader against the unpacked
# .debs). No shell, no package manager; USER 65532:65532; exec-form entrypoint; OCI labels as in
# docker/*.Dockerfile. Layers are reproducible (sorted, mtime 0, owner 0).
#
#   scripts/images.sh            release-profile binaries (what to push)
#   scripts/images.sh --debug    debug-profile binaries (scripts/test.sh: saves a release build)
#   scripts/images.sh --strict   an image that cannot be built here is an error (exit 1)
#   scripts/images.sh --list     print the image references this script builds, build nothing
#
# Output in $CADUCEUS_IMAGES_DIR (default .tmp/images/): one <repository>_<tag>.tar per image,
# images.txt ("<reference> <archive>" per built image) and not-built.txt ("<reference> <reason>"
# per image that could not be built here). It prints the references it built on stdout.
#
# A backup image whose PostgreSQL client is not in this machine's Debian package index (Debian 12
# ships postgresql-client-15 only) is NOT built and is reported with apt's own message: it is never
# built from another major's client. Without --strict that is not an error (exit 0) as long as
# everything else was built; any other failure exits 1 with a message.
#
# crane (github.com/google/go-containerregistry/cmd/crane, pinned in scripts/images/go.mod) is
# built from the Go module proxy into .tools/images/<version-and-pin-hash>/ on first use; Debian
# packages are cached in .tools/images/debs/. The config is written with `crane mutate`, which
# reads its input from a registry: a throw-away `crane registry serve` on 127.0.0.1 holds the
# intermediate image for that one step and is stopped on exit.
set -euo pipefail
export LC_ALL=C
# Files and directories of the layers must be readable by uid 65532.
umask 022

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
MODULE="$HERE/images"
OUT="${CADUCEUS_IMAGES_DIR:-$ROOT/.tmp/images}"
TOOLS="$ROOT/.tools/images"
DEB_CACHE="$TOOLS/debs"
REGISTRY="ghcr.io/caduceus-health"
# PostgreSQL majors the backup image is published for (the operator's default must be one).
BACKUP_PG_MAJORS="15 16"
UID_GID="65532:65532"

log() { printf 'images: %s\n' "$*" >&2; }
die() {
    printf 'images: ERROR: %s\n' "$*" >&2
    exit 1
}

PROFILE=release
STRICT=0
LIST=0
for arg in "$@"; do
    case "$arg" in
        --debug) PROFILE=debug ;;
        --release) PROFILE=release ;;
        --strict) STRICT=1 ;;
        --list) LIST=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$arg' (see --help)" ;;
    esac
done

# --- what to build ------------------------------------------------------------------------------
VERSION="$(awk '/^\[/ { s = ($0 == "[workspace.package]") } s && $1 == "version" { gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")"
[ -n "$VERSION" ] || die "no version in [workspace.package] of $ROOT/Cargo.toml"
DEFAULT_PG="$(sed -n 's/^pub const DEFAULT_POSTGRES_VERSION: &str = "\([0-9.]*\)";$/\1/p' "$ROOT/operator/src/crd/mod.rs")"
[ -n "$DEFAULT_PG" ] || die "no DEFAULT_POSTGRES_VERSION in operator/src/crd/mod.rs"
case " $BACKUP_PG_MAJORS " in
    *" ${DEFAULT_PG%%.*} "*) ;;
    *) die "the operator's default PostgreSQL ${DEFAULT_PG} (major ${DEFAULT_PG%%.*}) is not in BACKUP_PG_MAJORS ($BACKUP_PG_MAJORS): the backup image it runs would not exist" ;;
esac

ref_of() { # ref_of BINARY [PG_MAJOR]
    if [ -n "${2:-}" ]; then
        printf '%s/%s:%s-pg%s' "$REGISTRY" "$1" "$VERSION" "$2"
    else
        printf '%s/%s:%s' "$REGISTRY" "$1" "$VERSION"
    fi
}

if [ "$LIST" = 1 ]; then
    ref_of caduceus-operator
    echo
    ref_of caduceus-api
    echo
    for major in $BACKUP_PG_MAJORS; do
        ref_of caduceus-backup "$major"
        echo
    done
    exit 0
fi

# --- host checks --------------------------------------------------------------------------------
for cmd in cargo rustc go tar readelf apt-get apt-cache dpkg-deb realpath; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' is needed (this script runs on a Debian-based Linux host with Rust and Go)"
done
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
case "$TRIPLE" in
    x86_64-unknown-linux-gnu) ARCH=amd64 MULTIARCH=x86_64-linux-gnu ;;
    aarch64-unknown-linux-gnu) ARCH=arm64 MULTIARCH=aarch64-linux-gnu ;;
    *) die "host triple '$TRIPLE' is not supported (x86_64 or aarch64 Linux with glibc)" ;;
esac
[ "$(dpkg --print-architecture 2>/dev/null || true)" = "$ARCH" ] \
    || die "Debian's architecture here is not $ARCH: the Debian packages would not match the binaries"

mkdir -p "$OUT" "$DEB_CACHE"
WORK="$(mktemp -d)"
REGISTRY_PID=""
cleanup() {
    if [ -n "$REGISTRY_PID" ]; then
        kill "$REGISTRY_PID" 2>/dev/null || true
        wait "$REGISTRY_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- crane --------------------------------------------------------------------------------------
CRANE_VERSION="$(awk '$1 == "github.com/google/go-containerregistry" && $2 ~ /^v/ { print $2; exit }' "$MODULE/go.mod")"
[ -n "$CRANE_VERSION" ] || die "github.com/google/go-containerregistry is not required in $MODULE/go.mod"
CRANE_DIR="$TOOLS/crane-$CRANE_VERSION-$(cat "$MODULE/go.mod" "$MODULE/go.sum" | sha256sum | cut -c1-12)"
CRANE="$CRANE_DIR/crane"
if [ ! -x "$CRANE" ]; then
    log "building crane $CRANE_VERSION into $CRANE_DIR (Go module proxy)"
    mkdir -p "$CRANE_DIR"
    (cd "$MODULE" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath" \
        go build -ldflags "-s -w" -o "$CRANE.tmp" github.com/google/go-containerregistry/cmd/crane) \
        || die "go build of crane $CRANE_VERSION failed (is the Go module proxy reachable?)"
    mv "$CRANE.tmp" "$CRANE"
fi

# --- the binaries -------------------------------------------------------------------------------
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN_DIR="$TARGET_DIR/$TRIPLE/$PROFILE"
cargo_args=(build --locked --target "$TRIPLE"
    -p caduceus-operator --bin caduceus-operator
    -p caduceus-api --bin caduceus-api
    -p caduceus-backup --bin caduceus-backup)
[ "$PROFILE" = release ] && cargo_args+=(--release)
log "cargo ${cargo_args[*]} (static glibc: -C target-feature=+crt-static)"
(cd "$ROOT" && RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" cargo "${cargo_args[@]}") \
    || die "cargo build of the static binaries failed"
for bin in caduceus-operator caduceus-api caduceus-backup; do
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin was not built"
    # Captured first: `readelf | grep -q` under pipefail fails when grep exits early (SIGPIPE).
    headers="$(readelf -l "$BIN_DIR/$bin")" || die "readelf -l $BIN_DIR/$bin failed"
    if [[ "$headers" == *'Requesting program interpreter'* ]]; then
        die "$BIN_DIR/$bin is dynamically linked (readelf shows a program interpreter)"
    fi
    got="$("$BIN_DIR/$bin" --version)" || die "$BIN_DIR/$bin --version failed"
    [ "$got" = "$bin $VERSION" ] || die "$BIN_DIR/$bin --version says '$got', expected '$bin $VERSION'"
done

# --- Debian packages ----------------------------------------------------------------------------
APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 0 ] || return 0
    APT_UPDATED=1
    if [ "$(id -u)" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        log "sudo apt-get update"
        sudo -n apt-get update -qq >/dev/null || die "apt-get update failed"
    else
        log "not root: cannot run apt-get update, using the package index as it is"
    fi
}

# deb_fetch PKG: sets DEB to the path of PKG's .deb (candidate version) in $DEB_CACHE, downloaded
# when missing. On failure leaves apt's error lines in $WORK/apt-error and returns 1.
DEB=""
deb_fetch() {
    local pkg="$1" file tmp
    DEB=""
    if ! apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1; then
        apt_update_once
    fi
    file="$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Filename:" && !seen { print $2; seen = 1 }')"
    file="${file##*/}"
    if [ -n "$file" ] && [ -f "$DEB_CACHE/$file" ]; then
        DEB="$DEB_CACHE/$file"
        return 0
    fi
    tmp="$(mktemp -d "$WORK/download.XXXXXX")"
    chmod 0755 "$tmp"
    if ! (cd "$tmp" && apt-get download -q "$pkg") >/dev/null 2>"$WORK/apt-stderr"; then
        grep -E '^(E|W):' "$WORK/apt-stderr" >"$WORK/apt-error" || cp "$WORK/apt-stderr" "$WORK/apt-error"
        return 1
    fi
    local downloaded=("$tmp"/*.deb)
    if [ "${#downloaded[@]}" != 1 ] || [ ! -f "${downloaded[0]}" ]; then
        printf 'apt-get download %s produced no single .deb\n' "$pkg" >"$WORK/apt-error"
        return 1
    fi
    [ -n "$file" ] || file="${downloaded[0]##*/}"
    mv "${downloaded[0]}" "$DEB_CACHE/$file"
    DEB="$DEB_CACHE/$file"
}

# deb_unpack STAGE PKG: unpacks PKG into STAGE/root (the merged tree) and STAGE/pkg/PKG (to know
# which package a file came from). Dies when the package cannot be downloaded.
deb_unpack() {
    local stage="$1" pkg="$2"
    [ -d "$stage/pkg/$pkg" ] && return 0
    deb_fetch "$pkg" || die "apt-get download $pkg failed: $(cat "$WORK/apt-error")"
    mkdir -p "$stage/root" "$stage/pkg/$pkg"
    dpkg-deb -x "$DEB" "$stage/root"
    dpkg-deb -x "$DEB" "$stage/pkg/$pkg"
    dpkg-deb -f "$DEB" Version >"$stage/pkg/$pkg.version"
}

# lib_deps DEB: the library packages (lib*, zlib*) PKG's Depends/Pre-Depends name (first
# alternative, no version or architecture qualifier).
lib_deps() {
    dpkg-deb -f "$1" Pre-Depends Depends \
        | sed 's/^[A-Za-z-]*: //' | tr ',' '\n' \
        | sed 's/|.*//; s/(.*)//; s/:[a-z0-9]*//; s/[[:space:]]//g' \
        | grep -E '^(lib|zlib)' | sort -u || true
}

# deb_unpack_with_libs STAGE PKG...: unpacks the packages and, recursively, the library packages
# they depend on.
deb_unpack_with_libs() {
    local stage="$1" pkg dep
    shift
    local queue=("$@")
    while [ "${#queue[@]}" -gt 0 ]; do
        pkg="${queue[0]}"
        queue=("${queue[@]:1}")
        [ -d "$stage/pkg/$pkg" ] && continue
        deb_unpack "$stage" "$pkg"
        for dep in $(lib_deps "$DEB"); do
            [ -d "$stage/pkg/$dep" ] || queue+=("$dep")
        done
    done
}

# in_root ROOT PATH: PATH (absolute, inside ROOT) with symlinks resolved inside ROOT, as a path
# relative to ROOT's /. Absolute link targets are taken relative to ROOT, as in the image.
in_root() {
    local root="$1" path="$2" n=0 target
    while [ -L "$root$path" ]; do
        n=$((n + 1))
        [ "$n" -le 40 ] || die "symlink loop at $path in $root"
        target="$(readlink "$root$path")"
        case "$target" in
            /*) path="$(realpath -m -s "$target")" ;;
            *) path="$(realpath -m -s "$(dirname "$path")/$target")" ;;
        esac
    done
    printf '%s\n' "$path"
}

# copy_in SRC_ROOT DST_ROOT PATH: copies PATH, and every symlink on the way to the file it names,
# from SRC_ROOT to DST_ROOT, keeping the paths (each one is appended to $WORK/copied).
copy_in() {
    local src="$1" dst="$2" path="$3" n=0 target
    while :; do
        [ -e "$src$path" ] || [ -L "$src$path" ] || die "$path is not in $src"
        mkdir -p "$dst$(dirname "$path")"
        cp -P --preserve=mode "$src$path" "$dst$path"
        printf '%s\n' "$path" >>"$WORK/copied"
        [ -L "$src$path" ] || return 0
        n=$((n + 1))
        [ "$n" -le 40 ] || die "symlink loop at $path in $src"
        target="$(readlink "$src$path")"
        case "$target" in
            /*) path="$(realpath -m -s "$target")" ;;
            *) path="$(realpath -m -s "$(dirname "$path")/$target")" ;;
        esac
    done
}

# interp ELF: the program interpreter an ELF executable requests ("" when static).
interp() {
    readelf -l "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p'
}

# loaded_libs ROOT ELF: the absolute paths (inside ROOT) of the shared libraries ELF loads, as
# ROOT's own dynamic loader resolves them with only ROOT's library directories (and no
# ld.so.cache), and the interpreter path ELF requests. Dies when a library is not found or
# resolves outside ROOT.
loaded_libs() {
    local root="$1" elf="$2" ld line path
    ld="$(interp "$elf")"
    [ -n "$ld" ] || die "$elf has no program interpreter"
    ld="$(in_root "$root" "$ld")"
    [ -x "$root$ld" ] || die "the dynamic loader $ld of $elf is not in $root"
    "$root$ld" --inhibit-cache \
        --library-path "$root/lib/$MULTIARCH:$root/usr/lib/$MULTIARCH:$root/lib:$root/usr/lib" \
        --list "$elf" >"$WORK/ld-list" 2>&1 || die "the dynamic loader cannot load $elf: $(cat "$WORK/ld-list")"
    while IFS= read -r line; do
        case "$line" in
            *"=> not found"*) die "${elf#"$root"} needs ${line%% =>*}, which no unpacked package provides: $line" ;;
            *" => "*) path="${line#* => }" ;;
            *linux-vdso*) continue ;;
            *) path="$line" ;;
        esac
        path="$(printf '%s' "$path" | sed 's/^[[:space:]]*//; s/ (0x[0-9a-f]*)$//')"
        [ -n "$path" ] || continue
        case "$path" in
            "$root"/*) printf '%s\n' "${path#"$root"}" ;;
            *) die "${elf#"$root"} loads $path, outside the unpacked packages (a library package is missing from the closure)" ;;
        esac
    done <"$WORK/ld-list"
    interp "$elf"
}

# --- the layers ---------------------------------------------------------------------------------
CA_DIR="$WORK/ca"
ca_bundle() {
    # Debian's ca-certificates ships the Mozilla roots as files; its postinst (update-ca-certificates)
    # concatenates them into /etc/ssl/certs/ca-certificates.crt. Same here, in name order.
    [ -f "$CA_DIR/root/etc/ssl/certs/ca-certificates.crt" ] && return 0
    deb_unpack "$CA_DIR" ca-certificates
    local certs=("$CA_DIR"/root/usr/share/ca-certificates/mozilla/*.crt)
    [ -f "${certs[0]}" ] || die "no certificates in Debian's ca-certificates package"
    mkdir -p "$CA_DIR/root/etc/ssl/certs"
    for crt in "${certs[@]}"; do
        cat "$crt"
        # update-ca-certificates ensures every certificate ends with a newline
        [ -z "$(tail -c1 "$crt")" ] || echo
    done >"$CA_DIR/root/etc/ssl/certs/ca-certificates.crt"
}

# base_layer DIR: what every image holds besides its programs.
base_layer() {
    local dir="$1"
    mkdir -p "$dir/etc/ssl/certs" "$dir/tmp" "$dir/usr/local/bin" "$dir/usr/share/doc/ca-certificates"
    chmod 1777 "$dir/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
    ca_bundle
    cp "$CA_DIR/root/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/"
    cp "$CA_DIR/root/usr/share/doc/ca-certificates/copyright" "$dir/usr/share/doc/ca-certificates/"
}

# layer_tar DIR TAR: a reproducible tarball of DIR (sorted, mtime 0, owned by 0:0).
layer_tar() {
    tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=gnu -C "$1" -cf "$2" .
}

# Labels of a Dockerfile's final stage (org.opencontainers.image.*="..."), as -l KEY=VALUE args.
LABEL_ARGS=()
dockerfile_labels() {
    local file="$ROOT/docker/$1" kv
    LABEL_ARGS=()
    [ -f "$file" ] || die "$file does not exist"
    while IFS= read -r kv; do
        LABEL_ARGS+=(-l "${kv%%=*}=$(printf '%s' "${kv#*=}" | sed 's/^"//; s/"$//')")
    done < <(grep -o 'org\.opencontainers\.image\.[a-z]*="[^"]*"' "$file")
    grep -q "org.opencontainers.image.version=\"$VERSION\"" "$file" \
        || die "$file does not label version $VERSION"
}

# crane registry: started on first use.
LOCAL=""
start_registry() {
    [ -n "$LOCAL" ] && return 0
    "$CRANE" registry serve --address 127.0.0.1:0 >"$WORK/registry.log" 2>&1 &
    REGISTRY_PID=$!
    local port="" i
    for i in $(seq 1 100); do
        port="$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$WORK/registry.log")"
        [ -n "$port" ] && break
        kill -0 "$REGISTRY_PID" 2>/dev/null || die "crane registry serve exited: $(cat "$WORK/registry.log")"
        [ "$i" -lt 100 ] || die "crane registry serve did not report its port: $(cat "$WORK/registry.log")"
        sleep 0.1
    done
    LOCAL="127.0.0.1:$port"
}

# image REF LAYER_DIR DOCKERFILE ENTRYPOINT CMD PATH [EXTRA crane mutate ARGS...]: writes the
# archive of REF and records it.
BUILT=()
NOT_BUILT=()
image() {
    local ref="$1" dir="$2" dockerfile="$3" entrypoint="$4" cmd="$5" path_env="$6"
    shift 6
    local name="${ref##*/}"
    local archive="$OUT/${name/:/_}.tar"
    local scratch="$LOCAL/build/${name}"
    dockerfile_labels "$dockerfile"
    layer_tar "$dir" "$WORK/${name/:/_}-layer.tar"
    "$CRANE" append --oci-empty-base -f "$WORK/${name/:/_}-layer.tar" -t "$scratch" >"$WORK/crane.log" 2>&1 \
        || die "crane append for $ref failed: $(cat "$WORK/crane.log")"
    local mutate=(mutate "$scratch" --set-platform "linux/$ARCH" --user "$UID_GID"
        --entrypoint "$entrypoint" -e "PATH=$path_env" "${LABEL_ARGS[@]}"
        -l "io.caduceus.image.cargo-profile=$PROFILE" -t "$ref" -o "$archive.tmp")
    [ -n "$cmd" ] && mutate+=(--cmd "$cmd")
    "$CRANE" "${mutate[@]}" "$@" >"$WORK/crane.log" 2>&1 \
        || die "crane mutate for $ref failed: $(cat "$WORK/crane.log")"
    mv "$archive.tmp" "$archive"
    BUILT+=("$ref $archive")
    log "built $ref -> ${archive#"$ROOT"/} ($(du -h "$archive" | cut -f1))"
}

rm -f "$OUT"/*.tar "$OUT/images.txt" "$OUT/not-built.txt"
start_registry

for bin in caduceus-operator caduceus-api; do
    dir="$WORK/layer-$bin"
    base_layer "$dir"
    install -m 0755 "$BIN_DIR/$bin" "$dir/usr/local/bin/$bin"
    case "$bin" in
        caduceus-operator) cmd=run dockerfile=operator.Dockerfile ;;
        caduceus-api) cmd=serve dockerfile=api.Dockerfile ;;
    esac
    image "$(ref_of "$bin")" "$dir" "$dockerfile" "/usr/local/bin/$bin" "$cmd" "/usr/local/bin:/usr/bin:/bin"
done

for major in $BACKUP_PG_MAJORS; do
    ref="$(ref_of caduceus-backup "$major")"
    client="postgresql-client-$major"
    if ! deb_fetch "$client"; then
        reason="apt-get download $client: $(tr '\n' ' ' <"$WORK/apt-error" | sed 's/ *$//')"
        log "NOT BUILT $ref: $reason"
        NOT_BUILT+=("$ref $reason")
        continue
    fi
    stage="$WORK/pg$major"
    deb_unpack_with_libs "$stage" libc6 "$client"
    dir="$WORK/layer-backup-pg$major"
    base_layer "$dir"
    install -m 0755 "$BIN_DIR/caduceus-backup" "$dir/usr/local/bin/caduceus-backup"
    pgbin="/usr/lib/postgresql/$major/bin"
    : >"$WORK/copied"
    for tool in pg_dump pg_restore; do
        [ -x "$stage/root$pgbin/$tool" ] || die "$client has no $pgbin/$tool"
        copy_in "$stage/root" "$dir" "$pgbin/$tool"
        ln -s "$pgbin/$tool" "$dir/usr/local/bin/$tool"
        loaded_libs "$stage/root" "$stage/root$pgbin/$tool" >>"$WORK/pg$major-libs"
    done
    while IFS= read -r lib; do
        copy_in "$stage/root" "$dir" "$lib"
    done < <(sort -u "$WORK/pg$major-libs")
    # The closure again, against the layer alone: nothing may come from elsewhere.
    for tool in pg_dump pg_restore; do
        loaded_libs "$dir" "$dir$pgbin/$tool" >/dev/null
    done
    ld="$(in_root "$dir" "$(interp "$dir$pgbin/pg_dump")")"
    got="$("$dir$ld" --inhibit-cache --library-path "$dir/lib/$MULTIARCH:$dir/usr/lib/$MULTIARCH" "$dir$pgbin/pg_dump" --version)" \
        || die "pg_dump from $client does not run from the layer"
    case "$got" in
        "pg_dump (PostgreSQL) $major."*) ;;
        *) die "pg_dump from $client reports '$got', not PostgreSQL $major" ;;
    esac
    # Licences: the copyright file of every package a file was taken from.
    used=()
    for pkgdir in "$stage"/pkg/*/; do
        pkg="$(basename "$pkgdir")"
        while IFS= read -r f; do
            if [ -e "$pkgdir$f" ] || [ -L "$pkgdir$f" ]; then
                used+=("$pkg")
                # (a package's doc directory may be a symlink to another package's: read it in
                # the merged tree)
                [ -f "$stage/root/usr/share/doc/$pkg/copyright" ] \
                    || die "Debian package $pkg has no usr/share/doc/$pkg/copyright"
                mkdir -p "$dir/usr/share/doc/$pkg"
                cp -L "$stage/root/usr/share/doc/$pkg/copyright" "$dir/usr/share/doc/$pkg/"
                break
            fi
        done <"$WORK/copied"
    done
    client_version="$(cat "$stage/pkg/$client.version")"
    log "$ref: $got, from Debian's $client $client_version with the libraries it loads (files of ${#used[@]} Debian packages)"
    image "$ref" "$dir" backup.Dockerfile /usr/local/bin/caduceus-backup "" \
        "$pgbin:/usr/local/bin:/usr/bin:/bin" -l "io.caduceus.image.postgresql-client=$client $client_version"
done

{
    for line in "${BUILT[@]}"; do printf '%s\n' "$line"; done
} >"$OUT/images.txt"
if [ "${#NOT_BUILT[@]}" -gt 0 ]; then
    for line in "${NOT_BUILT[@]}"; do printf '%s\n' "$line"; done >"$OUT/not-built.txt"
fi

printf 'images: %s image(s) built from %s-profile static binaries into %s:\n' "${#BUILT[@]}" "$PROFILE" "$OUT" >&2
for line in "${BUILT[@]}"; do
    printf '%s\n' "${line%% *}"
done
if [ "${#NOT_BUILT[@]}" -gt 0 ]; then
    printf '\nimages: NOT BUILT here (%s; listed in %s):\n' \
        "the PostgreSQL client of that major is not in this machine's Debian package index; the release pipeline builds it from docker/backup.Dockerfile" \
        "${OUT#"$ROOT"/}/not-built.txt" >&2
    for line in "${NOT_BUILT[@]}"; do printf '  %s\n' "$line" >&2; done
    [ "$STRICT" = 0 ] || die "--strict: ${#NOT_BUILT[@]} image(s) could not be built"
fi
