// rewrite() mounted without chain() (Express): a request the exchange refuses whatever its path
// (issue 16, 482e040: TRACE 405, a bad or repeated Host 400) goes to next() with that refusal, as
// balance() does, not with rewrite()'s own 400 for a malformed target.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import express from 'express';
import { rewrite, type SwitchyardError } from '../../src/index.ts';
import { RawClient } from '../balance/support.ts';
import { listen } from '../helpers.ts';

test('rewrite() without chain(): TRACE is 405 and a repeated Host 400, from the refusal; the next handler never runs', async (t) => {
  const seen: string[] = [];
  const errors: string[] = [];
  const app = express();
  app.set('env', 'test');
  app.use(rewrite([{ return: 200, text: 'rewritten' }]));
  app.use((req, res) => {
    seen.push(req.method);
    res.end('next');
  });
  app.use((err: SwitchyardError, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    errors.push(err.code);
    res.status(err.statusCode).end();
  });
  const gw = await listen(t, createServer(app));
  const send = async (head: string): Promise<number> => {
    const c = await RawClient.open(t, gw.port);
    c.write(`${head}\r\nConnection: close\r\n\r\n`);
    return (await c.response()).status;
  };
  assert.equal(await send('TRACE /x HTTP/1.1\r\nHost: a.test'), 405);
  assert.equal(await send('GET /x HTTP/1.1\r\nHost: a.test\r\nHost: b.test'), 400);
  assert.equal(await send('GET /x HTTP/1.1\r\nHost: a.test'), 200);
  assert.deepEqual(errors, ['SWY_ERR_METHOD_NOT_ALLOWED', 'SWY_ERR_BAD_REQUEST']);
  assert.deepEqual(seen, []);
});
