#!/usr/bin/env node
// Fails when this package's copy of keyhaven.proto differs from the
// repository's proto/keyhaven/v1/keyhaven.proto. The package ships a copy
// because `npm install` of this directory (or of its tarball) cannot see
// ../../proto. With --fix, copies the repository's file over the copy.
'use strict';

const fs = require('fs');
const path = require('path');

const copy = path.join(__dirname, '..', 'proto', 'keyhaven', 'v1', 'keyhaven.proto');
const source = path.join(__dirname, '..', '..', '..', 'proto', 'keyhaven', 'v1', 'keyhaven.proto');

if (!fs.existsSync(source)) {
  console.error(`check-proto: no ${source}: run this inside the keyhaven repository`);
  process.exit(1);
}
const want = fs.readFileSync(source);
if (process.argv.includes('--fix')) {
  fs.writeFileSync(copy, want);
  console.log(`check-proto: copied ${path.relative(process.cwd(), source)} to ${path.relative(process.cwd(), copy)}`);
} else if (!fs.existsSync(copy) || !fs.readFileSync(copy).equals(want)) {
  console.error(
    `check-proto: ${copy} differs from ${source}.\n` +
      'The package must ship the contract it speaks: run `npm run check-proto -- --fix` in clients/node and commit the copy.',
  );
  process.exit(1);
} else {
  console.log('check-proto: clients/node/proto/keyhaven/v1/keyhaven.proto matches proto/keyhaven/v1/keyhaven.proto');
}
