#!/usr/bin/env bash
# Re-vendor Apache ECharts into processor/ui/static/vendor/echarts/ from its npm package, as
# MANIFEST.json pins it (version and npm's sha512 integrity): the UI works offline, no CDN.
# To upgrade, change "version", "tarball" and "integrity" in MANIFEST.json (from
# `npm view echarts@X dist`), run this, and commit the files with their new sha256.
set -euo pipefail
cd "$(dirname "$0")/../processor/ui/static/vendor/echarts"
tarball=$(python3 -c 'import json; print(json.load(open("MANIFEST.json"))["tarball"])')
integrity=$(python3 -c 'import json; print(json.load(open("MANIFEST.json"))["integrity"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "$tarball" -o "$tmp/pkg.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | base64 -w0)"
[ "$got" = "$integrity" ] || { echo "error: $tarball has integrity $got, MANIFEST.json says $integrity" >&2; exit 1; }
tar -xzf "$tmp/pkg.tgz" -C "$tmp"
cp "$tmp/package/dist/echarts.esm.min.js" "$tmp/package/LICENSE" "$tmp/package/NOTICE" .
python3 - <<'PY'
import hashlib, json
m = json.load(open("MANIFEST.json"))
for name, f in m["files"].items():
    f["sha256"] = hashlib.sha256(open(name, "rb").read()).hexdigest()
json.dump(m, open("MANIFEST.json", "w"), indent=2)
open("MANIFEST.json", "a").write("\n")
PY
echo "vendored echarts $(python3 -c 'import json; print(json.load(open("MANIFEST.json"))["version"])')"
