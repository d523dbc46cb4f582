"""The `denoise-study` command line: the one package that uses both the study layer (`studies`) and the report
(`reports`). Nothing below it imports it."""
