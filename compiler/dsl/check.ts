// Static checks of a model file with ts-morph: a model file may import only from compiler/dsl
// (relative imports of other model files, siblings or anywhere under models/, are allowed too: they are
// checked the same way).
import path from 'node:path';
import { Project } from 'ts-morph';
import { REPO_ROOT } from './trace.ts';

export interface ModelFileIssue {
  loc: string;
  message: string;
}

const DSL_DIR = path.join(REPO_ROOT, 'compiler', 'dsl');
const MODELS_DIR = path.join(REPO_ROOT, 'models');
let project: Project | undefined;
const cache = new Map<string, ModelFileIssue[]>();

/** Returns the problems in a model file (empty = fine), each with `file:line:col`. */
export function checkModelFile(file: string): ModelFileIssue[] {
  const abs = path.resolve(file);
  const hit = cache.get(abs);
  if (hit) return hit;
  project ??= new Project({ skipAddingFilesFromTsConfig: true, skipFileDependencyResolution: true, compilerOptions: { allowJs: false } });
  const sf = project.getSourceFile(abs) ?? project.addSourceFileAtPath(abs);
  const rel = path.relative(REPO_ROOT, abs).split(path.sep).join('/');
  const issues: ModelFileIssue[] = [];
  const checkSpec = (spec: string, pos: number): void => {
    const { line, column } = sf.getLineAndColumnAtPos(pos);
    const loc = `${rel}:${line}:${column}`;
    if (!spec.startsWith('.')) {
      issues.push({ loc, message: `model files may import only from compiler/dsl, not '${spec}': move this code into the compiler or drop the import` });
      return;
    }
    const target = path.resolve(path.dirname(abs), spec);
    const inDsl = target === DSL_DIR || target.startsWith(DSL_DIR + path.sep);
    // another model file: a sibling, or any file under models/ from a model file under models/
    const sibling = (path.dirname(target) === path.dirname(abs) && !spec.includes('..')) || (abs.startsWith(MODELS_DIR + path.sep) && target.startsWith(MODELS_DIR + path.sep));
    if (!inDsl && !sibling) {
      issues.push({ loc, message: `model files may import only from compiler/dsl, not '${spec}': use the DSL (import { ... } from '../compiler/dsl/index.ts')` });
    }
  };
  for (const d of sf.getImportDeclarations()) checkSpec(d.getModuleSpecifierValue(), d.getModuleSpecifier().getStart());
  for (const d of sf.getExportDeclarations()) {
    const v = d.getModuleSpecifierValue();
    if (v) checkSpec(v, d.getModuleSpecifier()!.getStart());
  }
  cache.set(abs, issues);
  return issues;
}
