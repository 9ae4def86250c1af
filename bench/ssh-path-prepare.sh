#!/usr/bin/env bash
# Makes what bench/ssh-path-gpu.sh carries to a GPU machine (into the ignored folder .ssh-gpu/):
# this machine's Node binary (xz), the CLI's production dependencies, Debian's OpenSSH server,
# client and sftp-server with the libraries a non-Debian image may lack; and builds dist-cli/.
set -euo pipefail
cd "$(dirname "$0")/.."
C=.ssh-gpu
mkdir -p "$C" .git/info
grep -qx "/$C/" .git/info/exclude 2>/dev/null || echo "/$C/" >> .git/info/exclude
[ -f "$C/node.xz" ] || xz -T2 -6 -c "$(readlink -f "$(command -v node)")" > "$C/node.xz"
if [ ! -f "$C/node_modules.tar.xz" ]; then
  tmp=$(mktemp -d); cp package.json package-lock.json "$tmp/"
  (cd "$tmp" && ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
  tar -cJf "$C/node_modules.tar.xz" -C "$tmp" node_modules; rm -rf "$tmp"
fi
(cd "$C" && apt-get download openssh-server openssh-sftp-server openssh-client libwrap0 libkrb5-3 \
  libgssapi-krb5-2 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2 libssl3 libcrypt1 2>/dev/null)
npm run --silent build:cli
du -sh "$C" dist-cli
