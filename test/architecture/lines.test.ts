// The formatter wraps code at biome.json's lineWidth but leaves long strings and comments alone:
// this holds src/ to that width everywhere, so no line of the library runs past it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : [],
  );
}

test("no line in src/ is longer than the formatter's lineWidth (biome.json)", () => {
  const width = (JSON.parse(readFileSync(join(root, 'biome.json'), 'utf8')) as { formatter: { lineWidth: number } }).formatter.lineWidth;
  assert.ok(Number.isInteger(width) && width >= 80, `biome.json has a formatter.lineWidth (${width})`);
  const long: string[] = [];
  const files = sources(join(root, 'src'));
  assert.ok(files.length > 30, 'src/ was read');
  for (const file of files) {
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (line.length > width) long.push(`${file.slice(root.length)}:${i + 1} (${line.length})`);
      });
  }
  assert.deepEqual(long, [], `lines over ${width} characters`);
});
