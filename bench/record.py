#!/usr/bin/python3
"""record.py - add one dated row to a suite's table in bench/RESULTS.md.

    record.py RESULTS_MD SECTION 'COL | COL | ...'

The row becomes `| YYYY-MM-DD | COL | COL | ... |` and goes right after the
last table line of the `## SECTION` part, so each suite keeps its own table
whatever order the benchmarks run in. The file is replaced atomically. Used
by every benchmark when SLUICE_BENCH_RECORD is set (the C ones run it).
"""
import datetime
import os
import sys


def insert_row(text, section, row):
    lines = text.split('\n')
    try:
        start = lines.index('## ' + section)
    except ValueError:
        raise SystemExit("record.py: no '## %s' section; add its table first" % section)
    end = start + 1
    while end < len(lines) and not lines[end].startswith('## '):
        end += 1
    table = [i for i in range(start, end) if lines[i].startswith('|')]
    if not table:
        raise SystemExit("record.py: section '%s' has no table" % section)
    lines.insert(table[-1] + 1, row)
    return '\n'.join(lines)


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.split('\n\n')[1])
    path, section, cols = sys.argv[1:]
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
    with open(path) as f:
        text = insert_row(f.read(), section, '| %s | %s |' % (date, cols.strip(' |')))
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    print('recorded in %s (## %s)' % (path, section))


if __name__ == '__main__':
    main()
