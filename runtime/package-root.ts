// Where the package's assets are (generated/, models/<shipped>/, templates/, build/, runtime/native/): the
// nearest folder above this file holding ditforge's package.json. The same from the TypeScript sources
// (runtime/) and from the compiled JavaScript of an installed package (dist/runtime/).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findPackageRoot(start: string): string {
  for (let d = start; ; d = path.dirname(d)) {
    const pj = path.join(d, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if ((JSON.parse(fs.readFileSync(pj, 'utf8')) as { name?: string }).name === 'ditforge') return d;
      } catch {
        /* not ours: keep looking */
      }
    }
    if (path.dirname(d) === d) throw new Error(`ditforge: no package.json of ditforge above ${start}`);
  }
}

export const PACKAGE_ROOT = findPackageRoot(path.dirname(fileURLToPath(import.meta.url)));

/** whether this module runs as compiled JavaScript (an installed package) rather than from the .ts sources */
export const COMPILED = import.meta.url.endsWith('.js');
