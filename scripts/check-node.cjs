// Run first by `npm start`, `npm test` and `npm run bench`: the repository's scripts run the
// TypeScript sources directly, which needs Node's type stripping on by default (Node 22.18 and
// later, 23.6 and later, 24). On an older Node, or with type stripping turned off, it says so and
// exits 1 instead of letting Node fail on the first `.ts` file. The published package (dist/)
// needs less: see "engines" in package.json.
//
// Plain CommonJS without recent syntax, so that any Node can run it and give the message.
'use strict';

/** The first version of each release line whose `node` runs `.ts` files by default. */
var STRIP_TYPES_SINCE = { 22: 18, 23: 6 };

/**
 * Whether Node `version` ("22.18.0" or "v22.18.0") strips TypeScript types by default.
 * @param {string} version
 * @returns {boolean}
 */
function stripsTypesByDefault(version) {
  var parts = String(version).replace(/^v/, '').split('.');
  var major = Number(parts[0]);
  var minor = Number(parts[1]);
  if (!(major >= 0) || !(minor >= 0)) return false;
  if (major >= 24) return true;
  var since = STRIP_TYPES_SINCE[major];
  return since !== undefined && minor >= since;
}

/**
 * What is wrong with this Node for the repository's scripts, or undefined when nothing is.
 * @param {string} version `process.versions.node`
 * @param {unknown} typescript `process.features.typescript` ('strip', 'transform' or false; undefined before 22.10)
 * @param {string} script the npm script being run, for the message
 * @returns {string | undefined}
 */
function problem(version, typescript, script) {
  var what = script ? '`npm ' + (script === 'start' || script === 'test' ? '' : 'run ') + script + '` needs' : "The repository's scripts need";
  var need = what + ' Node.js 22.18 or later (or 24) with type stripping on: ' + (script ? 'it runs' : 'they run') + ' the TypeScript sources directly.';
  if (!stripsTypesByDefault(version)) {
    return need + ' This is Node.js ' + version + '. (An installed switchyard package itself runs on Node.js 22.2 and later.)';
  }
  if (typescript === false) {
    return need + ' Type stripping is turned off in this Node.js ' + version + ' (--no-experimental-strip-types in NODE_OPTIONS?).';
  }
  return undefined;
}

module.exports = { stripsTypesByDefault: stripsTypesByDefault, problem: problem };

if (require.main === module) {
  var features = process.features || {};
  var message = problem(process.versions.node, features.typescript, process.env.npm_lifecycle_event);
  if (message !== undefined) {
    process.stderr.write('switchyard: ' + message + '\n');
    process.exitCode = 1;
  }
}
