#!/usr/bin/env bash
# String-keyed reads of a study's stored documents (records, study.json, baselines, best trial.json, images.json)
# outside the study layer: subscripts and .get() of their keys in the report and the CLI (issue 23).
#   bash benchmarks/stored_reads.sh        # run from the repository root; prints file and count
# A match can be a false positive (a pandas row, an in-memory result): read the lines with GREP_LINES=1.
cd "$(dirname "$0")/.." || exit 1
pattern='\b(r|rec|record|run|last|info|entry|b|shown|best|h|real\[n\]|m|bm3d)\["[a-z_]+"\]|\b(r|rec|run|last|info|entry|shown|b|h)\.get\("[a-z_]+"|\.info\[|\.info\.get\(|baselines\.get\(|baselines\[|\["(psnr|metrics|entries|cells|history|factors|phase|status|runs|test|val|images|showcase_psnr|test_per_image|param)"\]'
for f in reports/analysis.py reports/build.py reports/figures.py denoise_study/cli.py; do
  echo "$f $(grep -cE "$pattern" "$f")"
  [ -n "$GREP_LINES" ] && grep -nE "$pattern" "$f"
done
