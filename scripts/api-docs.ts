#!/usr/bin/env bun
/**
 * Generates docs/API.md, the API reference, from the TSDoc of what each
 * public entry point exports (the barrels `package.json` "exports" names),
 * with the TypeScript compiler API. Members marked `@internal` and private
 * members are left out.
 *
 *     bun scripts/api-docs.ts            write docs/API.md
 *     bun scripts/api-docs.ts --check    exit 1 if docs/API.md is not up to date
 * @module
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import ts from "typescript";

const root = resolve(import.meta.dir, "..");
const output = join(root, "docs", "API.md");
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { exports: Record<string, { types: string }> };

/** The subpath barrels, in the order of package.json (the root `.` re-exports them all, so it is described, not repeated). */
const entries = Object.entries(manifest.exports)
  .filter(([subpath]) => subpath !== ".")
  .map(([subpath, target]) => ({ specifier: `qbun${subpath.slice(1)}`, file: resolve(root, target.types) }));

const program = ts.createProgram(
  entries.map((e) => e.file),
  {
    target: ts.ScriptTarget.ESNext,
    module: ts.ModuleKind.Preserve,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    allowImportingTsExtensions: true,
    noEmit: true,
    strict: true,
    types: ["bun"],
  },
);
const checker = program.getTypeChecker();

/** One line of Markdown: `{@link X}` becomes `X` in code font. */
const oneLine = (text: string) =>
  text
    .replace(/\{@link\s+([^}\s|]+)(?:[\s|][^}]*)?\}/g, "`$1`")
    .replace(/\s*\n\s*/g, " ")
    .trim();
/** The first paragraph of a doc comment, on one line. */
const summary = (symbol: ts.Symbol) => oneLine(ts.displayPartsToString(symbol.getDocumentationComment(checker)).split(/\n\s*\n/)[0] ?? "");
const isInternal = (symbol: ts.Symbol) => symbol.getJsDocTags(checker).some((tag) => tag.name === "internal");
const cell = (text: string) => text.replace(/\|/g, "\\|");

function kindOf(symbol: ts.Symbol): string {
  const flags = symbol.flags;
  if (flags & ts.SymbolFlags.Class) return "class";
  if (flags & ts.SymbolFlags.Function) return "function";
  if (flags & ts.SymbolFlags.Interface) return "interface";
  if (flags & ts.SymbolFlags.TypeAlias) return "type";
  if (flags & ts.SymbolFlags.Enum) return "enum";
  if (flags & ts.SymbolFlags.Variable) return "const";
  return "value";
}

/** Whether a class member is part of the public surface (not private, protected, `#x` or `@internal`). */
function isPublicMember(member: ts.Symbol): boolean {
  if (member.name.startsWith("#") || isInternal(member)) return false;
  const decl = member.valueDeclaration ?? member.declarations?.[0];
  // Members inherited from the platform (Error's stack, message, captureStackTrace…) are not qbun's API.
  if (!decl || decl.getSourceFile().fileName.includes("/node_modules/") || !decl.getSourceFile().fileName.startsWith(root)) return false;
  const modifiers = ts.getCombinedModifierFlags(decl as ts.Declaration);
  return (modifiers & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) === 0;
}

function memberLine(member: ts.Symbol, owner: string, isStatic: boolean): string {
  const decl = member.valueDeclaration ?? member.declarations?.[0];
  const name = member.name.startsWith("__@") ? `[${member.name.slice(3).replace(/@\d+$/, "").replace(/^/, "Symbol.")}]` : member.name;
  const prefix = isStatic ? `${owner}.` : "";
  let shown = `${prefix}${name}`;
  if (decl && (ts.isMethodDeclaration(decl) || ts.isMethodSignature(decl))) {
    const type = checker.getTypeOfSymbolAtLocation(member, decl);
    const sig = type.getCallSignatures()[0];
    if (sig) shown += checker.signatureToString(sig, undefined, ts.TypeFormatFlags.NoTruncation);
  } else if (decl) {
    const readonly = ts.getCombinedModifierFlags(decl as ts.Declaration) & ts.ModifierFlags.Readonly || (decl && ts.isGetAccessor(decl) && !(member.flags & ts.SymbolFlags.SetAccessor));
    shown += `: ${checker.typeToString(checker.getTypeOfSymbolAtLocation(member, decl), undefined, ts.TypeFormatFlags.NoTruncation)}${readonly ? " (read-only)" : ""}`;
  }
  const text = summary(member);
  return `- \`${shown}\`${text ? ` — ${text}` : ""}`;
}

function classMembers(symbol: ts.Symbol): string[] {
  const lines: string[] = [];
  const statics = checker.getTypeOfSymbol(symbol).getProperties().filter((m) => m.name !== "prototype" && isPublicMember(m));
  for (const m of statics) lines.push(memberLine(m, symbol.name, true));
  const instance = checker.getDeclaredTypeOfSymbol(symbol).getProperties().filter(isPublicMember);
  for (const m of instance) lines.push(memberLine(m, symbol.name, false));
  return lines;
}

function moduleDoc(file: ts.SourceFile): string {
  const first = file.statements[0];
  const comment = first ? ts.getJSDocCommentsAndTags(first).find(ts.isJSDoc) : undefined;
  const text = comment ? ts.getTextOfJSDocComment(comment.comment) ?? "" : "";
  return oneLine(text.split(/\n\s*\n/)[0] ?? "");
}

const out: string[] = [
  "# qbun API reference",
  "",
  "<!-- Generated by scripts/api-docs.ts from the TSDoc of the public entry points; do not edit by hand. -->",
  "",
  "`import … from \"qbun\"` gives every name below; each subpath gives its own module's names.",
  "Error classes (`QbunSystemError`, `QbunArgumentError`, `ClosedError`) are re-exported by every module.",
  "",
];
for (const { specifier } of entries) out.push(`- [\`${specifier}\`](#${specifier.replace(/[^a-z0-9]/g, "")})`);
out.push("");

const shared = new Set<string>();
for (const { specifier, file } of entries) {
  const source = program.getSourceFile(file);
  if (!source) throw new Error(`api-docs: ${file} is not in the program`);
  const moduleSymbol = checker.getSymbolAtLocation(source);
  if (!moduleSymbol) throw new Error(`api-docs: ${file} has no exports`);
  out.push(`## \`${specifier}\``, "", moduleDoc(source).replace(/^`[^`]+`:\s*/, ""), "");
  const exports = checker.getExportsOfModule(moduleSymbol).sort((a, b) => a.name.localeCompare(b.name));
  const rows: string[] = ["| export | kind | what it is |", "|---|---|---|"];
  const details: string[] = [];
  for (const exported of exports) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    const declFile = symbol.declarations?.[0]?.getSourceFile().fileName ?? "";
    // Shared errors and fd types are listed once, under the first module that exports them.
    const key = `${declFile}#${symbol.name}`;
    if (declFile.includes("/ffi/") && shared.has(key)) continue;
    shared.add(key);
    const kind = kindOf(symbol);
    rows.push(`| \`${exported.name}\` | ${kind} | ${cell(summary(symbol))} |`);
    if (kind === "class") {
      const members = classMembers(symbol);
      if (members.length) details.push(`### \`${exported.name}\``, "", summary(symbol), "", ...members, "");
    }
  }
  out.push(...rows, "", ...details);
}
const text = `${out.join("\n").replace(/\n{3,}/g, "\n\n").trim()}\n`;

const { values } = parseArgs({ args: process.argv.slice(2), options: { check: { type: "boolean" } }, strict: true });
if (values.check) {
  let current = "";
  try {
    current = readFileSync(output, "utf8");
  } catch {}
  if (current !== text) {
    console.error("api-docs: docs/API.md is out of date; run bun scripts/api-docs.ts");
    process.exit(1);
  }
  console.log("api-docs: docs/API.md is up to date");
} else {
  writeFileSync(output, text);
  console.log(`api-docs: wrote docs/API.md (${entries.length} modules, ${(text.length / 1024).toFixed(0)} KiB)`);
}
