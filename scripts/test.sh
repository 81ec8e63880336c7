#!/usr/bin/env bash
# Runs the whole test suite and ends with the plain "N passed, N failed" line CI reads.
# vitest's exit code is kept as the script's exit code.
set -u
cd "$(dirname "$0")/.."
report=.vitest-report.json
rm -f "$report"
node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile="$report" "$@"
rc=$?
if [ -f "$report" ]; then
  node -e "const r=require('./$report');console.log(\`\${r.numPassedTests} passed, \${r.numFailedTests} failed\`)"
else
  echo "0 passed, 1 failed"
  [ $rc -eq 0 ] && rc=1
fi
exit $rc
