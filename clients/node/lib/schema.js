// Reads a .proto file (proto3, as proto/keyhaven/v1/keyhaven.proto is
// written: messages, enums, maps, oneofs, optional, services) far enough to
// compare it with the schema lib/proto.js encodes, and compares them. Used
// when a Client is given `protoDir` (another copy of the contract to check
// the codec against) and by test/proto.test.js (against the shipped copy;
// that test also checks this reader against protobufjs).
'use strict';

const fs = require('fs');

const { PACKAGE, SCHEMA } = require('./proto');

const TIMESTAMP = 'google.protobuf.Timestamp';
const SCALAR = new Set([
  'double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64',
  'fixed32', 'fixed64', 'sfixed32', 'sfixed64', 'bool', 'string', 'bytes',
]);

function tokenize(text) {
  const tokens = [];
  const re = /\s+|\/\/[^\n]*|\/\*[\s\S]*?\*\/|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|([A-Za-z_.][A-Za-z0-9_.]*)|(-?[0-9][0-9A-Za-z_.+-]*)|([{}()[\]<>;=,:-])/y;
  let line = 1;
  while (re.lastIndex < text.length) {
    const at = re.lastIndex;
    const m = re.exec(text);
    if (!m) throw new Error(`line ${line}: unexpected ${JSON.stringify(text.slice(at, at + 10))}`);
    const value = m[1] || m[2] || m[3] || m[4];
    if (value !== undefined) tokens.push({ value, line });
    line += (m[0].match(/\n/g) || []).length;
  }
  return tokens;
}

/**
 * The messages, enums and services of a .proto's text, by full name:
 * {package, messages: Map(name -> Map(field -> {number, type, rule,
 * keyType, oneof})), enums: Map(name -> Map(value -> number)), services:
 * Map(name -> Map(method -> {request, response, requestStream,
 * responseStream}))}. Field and method types are full names (an imported
 * type as written). rule: '' | 'optional' | 'repeated' | 'map'.
 */
function parseProto(text) {
  const tokens = tokenize(text);
  let i = 0;
  const peek = () => (i < tokens.length ? tokens[i].value : null);
  const fail = (why) => {
    const line = i < tokens.length ? tokens[i].line : 'end';
    throw new Error(`line ${line}: ${why}`);
  };
  const next = () => {
    if (i >= tokens.length) fail('unexpected end of file');
    return tokens[i++].value;
  };
  const expect = (value) => {
    const got = next();
    if (got !== value) {
      i -= 1;
      fail(`expected ${value}, found ${got}`);
    }
  };
  const number = () => {
    const t = next();
    const n = /^0x/i.test(t) ? parseInt(t, 16) : Number(t);
    if (!Number.isInteger(n)) fail(`expected a number, found ${t}`);
    return n;
  };
  // Skips a statement up to its ';' (or a block up to its '}').
  const skipStatement = () => {
    let depth = 0;
    for (;;) {
      const t = next();
      if (t === '{') depth += 1;
      else if (t === '}') {
        depth -= 1;
        if (depth === 0) return;
      } else if (t === ';' && depth === 0) return;
    }
  };
  const skipOptions = () => {
    if (peek() !== '[') return;
    let depth = 0;
    for (;;) {
      const t = next();
      if (t === '[') depth += 1;
      else if (t === ']' && --depth === 0) return;
    }
  };

  const out = { package: '', messages: new Map(), enums: new Map(), services: new Map() };
  const pending = []; // fields and methods whose types resolve once every name is known

  function parseEnum(scope) {
    const name = `${scope}.${next()}`;
    const values = new Map();
    expect('{');
    while (peek() !== '}') {
      const t = peek();
      if (t === 'option' || t === 'reserved') {
        skipStatement();
        continue;
      }
      if (t === ';') {
        next();
        continue;
      }
      const value = next();
      expect('=');
      values.set(value, number());
      skipOptions();
      expect(';');
    }
    expect('}');
    out.enums.set(name, values);
  }

  function parseField(scope, fields, oneof) {
    let rule = '';
    let type = next();
    let keyType;
    if (type === 'optional' || type === 'repeated' || type === 'required') {
      rule = type === 'required' ? '' : type;
      type = next();
    } else if (type === 'map') {
      expect('<');
      keyType = next();
      expect(',');
      type = next();
      expect('>');
      rule = 'map';
    }
    const name = next();
    expect('=');
    const field = { number: number(), type, rule, keyType, oneof, scope };
    skipOptions();
    expect(';');
    if (fields.has(name)) fail(`field ${name} is declared twice`);
    fields.set(name, field);
    pending.push(field);
  }

  function parseMessage(scope) {
    const name = `${scope}.${next()}`;
    const fields = new Map();
    out.messages.set(name, fields);
    expect('{');
    while (peek() !== '}') {
      const t = peek();
      if (t === 'message') {
        next();
        parseMessage(name);
      } else if (t === 'enum') {
        next();
        parseEnum(name);
      } else if (t === 'oneof') {
        next();
        const oneof = next();
        expect('{');
        while (peek() !== '}') {
          if (peek() === 'option') skipStatement();
          else parseField(name, fields, oneof);
        }
        expect('}');
      } else if (t === 'option' || t === 'reserved' || t === 'extensions' || t === 'extend') {
        skipStatement();
      } else if (t === ';') {
        next();
      } else {
        parseField(name, fields, undefined);
      }
    }
    expect('}');
  }

  function parseService(scope) {
    const name = `${scope}.${next()}`;
    const methods = new Map();
    expect('{');
    while (peek() !== '}') {
      const t = next();
      if (t === 'option') {
        i -= 1;
        skipStatement();
        continue;
      }
      if (t === ';') continue;
      if (t !== 'rpc') fail(`expected rpc, found ${t}`);
      const method = next();
      const side = () => {
        expect('(');
        let stream = false;
        if (peek() === 'stream') {
          next();
          stream = true;
        }
        const type = next();
        expect(')');
        return [type, stream];
      };
      const [request, requestStream] = side();
      expect('returns');
      const [response, responseStream] = side();
      const m = { request, response, requestStream, responseStream, scope: name };
      methods.set(method, m);
      pending.push(m);
      if (peek() === '{') skipStatement();
      else expect(';');
    }
    expect('}');
    out.services.set(name, methods);
  }

  while (i < tokens.length) {
    const t = next();
    if (t === 'syntax' || t === 'import' || t === 'option' || t === 'edition') {
      i -= 1;
      skipStatement();
    } else if (t === 'package') {
      out.package = next();
      expect(';');
    } else if (t === 'message') {
      parseMessage(out.package);
    } else if (t === 'enum') {
      parseEnum(out.package);
    } else if (t === 'service') {
      parseService(out.package);
    } else if (t === ';') {
      // empty statement
    } else {
      i -= 1;
      fail(`unexpected ${t}`);
    }
  }

  // A name as written, resolved from the scope outwards (as protoc does).
  const known = (n) => out.messages.has(n) || out.enums.has(n);
  const resolve = (type, scope) => {
    if (SCALAR.has(type)) return type;
    if (type.startsWith('.')) return type.slice(1);
    for (let s = scope; ; s = s.slice(0, Math.max(0, s.lastIndexOf('.')))) {
      const candidate = s ? `${s}.${type}` : type;
      if (known(candidate)) return candidate;
      if (!s) return type;
    }
  };
  for (const item of pending) {
    if ('number' in item) {
      item.type = resolve(item.type, item.scope);
    } else {
      item.request = resolve(item.request, item.scope);
      item.response = resolve(item.response, item.scope);
    }
    delete item.scope;
  }
  return out;
}

// A type of lib/proto.js's schema by its full name.
function fullName(type) {
  if (SCALAR.has(type) || type.includes('.')) return type;
  return `${PACKAGE}.${type}`;
}

/**
 * What differs between lib/proto.js's schema and a parsed .proto: a list
 * of sentences, empty when they agree. Every field, enum value and method
 * the codec knows must be in the .proto with the same number, type and
 * rule. With `complete`, every field and enum value of those messages and
 * enums in the .proto must also be known to the codec. `timestamp` is
 * google.protobuf.Timestamp as parsed elsewhere (the .proto imports it);
 * without it that message is not checked.
 */
function compareSchema(parsed, { complete = false, timestamp = null } = {}) {
  const problems = [];
  for (const [typeName, fields] of Object.entries(SCHEMA.messages)) {
    const name = fullName(typeName);
    const proto = name === TIMESTAMP ? timestamp : parsed.messages.get(name);
    if (!proto) {
      if (name !== TIMESTAMP) problems.push(`message ${name} is not in the .proto`);
      continue;
    }
    for (const [field, num, type, rule] of fields) {
      const p = proto.get(field);
      if (!p) {
        problems.push(`${name}.${field} is not in the .proto`);
        continue;
      }
      const want = `${rule ? `${rule} ` : ''}${rule === 'map' ? `map<string, ${fullName(type)}>` : fullName(type)} = ${num}`;
      const got = `${p.rule ? `${p.rule} ` : ''}${p.rule === 'map' ? `map<${p.keyType}, ${p.type}>` : p.type} = ${p.number}`;
      if (want !== got || p.oneof) problems.push(`${name}.${field}: the codec has ${want}, the .proto ${got}${p.oneof ? ` in oneof ${p.oneof}` : ''}`);
    }
    if (complete) {
      const known = new Set(fields.map(([field]) => field));
      for (const [field, p] of proto) {
        if (!known.has(field)) problems.push(`${name}.${field} (= ${p.number}) is in the .proto but not in lib/proto.js`);
      }
    }
  }
  for (const [enumName, values] of Object.entries(SCHEMA.enums)) {
    const name = fullName(enumName);
    const proto = parsed.enums.get(name);
    if (!proto) {
      problems.push(`enum ${name} is not in the .proto`);
      continue;
    }
    for (const [value, n] of Object.entries(values)) {
      if (proto.get(value) !== n) problems.push(`${name}.${value}: the codec has ${n}, the .proto ${proto.get(value)}`);
    }
    if (complete) {
      for (const [value, n] of proto) {
        if (!(value in values)) problems.push(`${name}.${value} (= ${n}) is in the .proto but not in lib/proto.js`);
      }
    }
  }
  for (const [method, m] of Object.entries(SCHEMA.methods)) {
    const service = `${PACKAGE}.${m.service}`;
    const p = parsed.services.has(service) && parsed.services.get(service).get(method);
    if (!p) {
      problems.push(`rpc ${service}.${method} is not in the .proto`);
      continue;
    }
    const want = `(${fullName(m.request)}) returns (${m.serverStreaming ? 'stream ' : ''}${fullName(m.response)})`;
    const got = `(${p.requestStream ? 'stream ' : ''}${p.request}) returns (${p.responseStream ? 'stream ' : ''}${p.response})`;
    if (want !== got) problems.push(`rpc ${service}.${method}: the codec has ${want}, the .proto ${got}`);
  }
  return problems;
}

/** Throws unless the .proto file at `file` agrees with lib/proto.js's schema. */
function checkContract(file) {
  const parsed = parseProto(fs.readFileSync(file, 'utf8'));
  if (parsed.package !== PACKAGE) throw new Error(`${file} is package ${parsed.package || '(none)'}, not ${PACKAGE}`);
  const problems = compareSchema(parsed);
  if (problems.length) throw new Error(`${file} does not match this client's messages: ${problems.join('; ')}`);
}

module.exports = { checkContract, compareSchema, parseProto };
