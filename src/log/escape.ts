// How nginx's log_format escapes variable values (ngx_http_log_module.c, `escape=`), on the bytes
// of the value: node reads the request line's and the headers' bytes as latin1, so there a character
// up to U+00FF is one byte; in a decoded value (`$uri`) every character from U+0080 up is its UTF-8
// bytes, and so is a wider character anywhere (a value set in JavaScript).

const HEX = '0123456789ABCDEF';

function hexByte(byte: number): string {
  return `\\x${HEX[byte >> 4]}${HEX[byte & 15]}`;
}

/**
 * A value escaped as nginx's `escape=default` does: `"`, `\`, bytes below 0x20 and from 0x7F up as
 * `\xHH`; `decoded`: a value of Unicode characters, not latin1 bytes.
 */
export function escapeDefault(value: string, decoded = false): string {
  // A loop over the code units finds most values (addresses, request lines, user agents) clean
  // faster than a regular expression's call does.
  let i = 0;
  for (; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code === 0x22 || code === 0x5c || code >= 0x7f) break;
  }
  if (i === value.length) return value;
  const wide = decoded ? 0x7f : 0xff;
  let out = '';
  for (const ch of value) {
    const code = ch.codePointAt(0)!;
    if (code > wide) {
      for (const byte of Buffer.from(ch, 'utf8')) out += hexByte(byte);
    } else if (code < 0x20 || code === 0x22 || code === 0x5c || code >= 0x7f) {
      out += hexByte(code);
    } else {
      out += ch;
    }
  }
  return out;
}

const JSON_SHORT: Readonly<Record<number, string>> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r' };

/**
 * A value escaped as nginx's `escape=json` does: `"` and `\` with a backslash, bytes below 0x20 as
 * `\n`, `\r`, `\t`, `\b`, `\f` or `\u00HH`; bytes from 0x7F up are left as they are.
 */
export function escapeJson(value: string): string {
  let i = 0;
  for (; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0x20 || code === 0x22 || code === 0x5c) break;
  }
  if (i === value.length) return value;
  let out = '';
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code === 0x22 || code === 0x5c) out += `\\${value[i]}`;
    else if (code < 0x20) out += JSON_SHORT[code] ?? `\\u00${HEX[code >> 4]}${HEX[code & 15]}`;
    else out += value[i];
  }
  return out;
}
