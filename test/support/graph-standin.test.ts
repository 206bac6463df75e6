/**
 * The Graph stand-in's own checks, driven by plain HTTPS requests (undici with the test CA), and the Graph
 * tokens of the Microsoft stand-in that it introspects.
 */
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGraphStandin, UPLOAD_RANGE_UNIT, type GraphStandin } from './graph-standin.js';
import { GRAPH_SEND_REQUEST_SCOPE, signInForGraph, type StandinGraphTokens } from './graph-tokens.js';
import { GRAPH_MAIL_SEND_SCOPE, GRAPH_RESOURCE, OUTLOOK_RESOURCE, OUTLOOK_SMTP_SCOPE, startMicrosoftStandin, type MicrosoftStandin } from './oauth-standins.js';
import { createTestPki, type TestPki } from './test-ca.js';
import { createIntrospector } from './upstream-smtp.js';

const ALICE = { email: 'alice@example.test', password: 'correct horse' };
const BOB = { email: 'bob@example.test', password: 'correct horse' };

let pki: TestPki;
let ms: MicrosoftStandin;
/** An app registration with Mail.Send only (no Mail.ReadWrite). */
let sendOnly: MicrosoftStandin;
let graph: GraphStandin;
let graphSendOnly: GraphStandin;
let agent: Agent;
let alice: StandinGraphTokens;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  pki = await createTestPki();
  [ms, sendOnly] = await Promise.all([startMicrosoftStandin({ pki }), startMicrosoftStandin({ pki, graphPermissions: ['Mail.Send'] })]);
  [graph, graphSendOnly] = await Promise.all([startGraphStandin({ introspection: ms.introspection, pki }), startGraphStandin({ introspection: sendOnly.introspection, pki })]);
  agent = new Agent({ connect: { ca: pki.ca.cert } });
  const signedIn = await signInForGraph(ms, ALICE);
  closers.push(signedIn.close);
  alice = signedIn.tokens;
});

afterAll(async () => {
  for (const close of closers) await close();
  await Promise.all([graph?.close(), graphSendOnly?.close()]);
  await Promise.all([ms?.close(), sendOnly?.close()]);
  await agent?.close();
});

const MIME = Buffer.from('From: alice@example.test\r\nTo: bob@example.test\r\nCc: Carol <carol@example.test>\r\nBcc: dave@example.test\r\nSubject: hi\r\n\r\nhello\r\n');

async function call(url: string, init: { method?: string; token?: string; body?: string | Buffer; type?: string; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...init.headers };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.type) headers['content-type'] = init.type;
  const response = await undiciFetch(url, { method: init.method ?? 'POST', headers, body: init.body, dispatcher: agent });
  const text = await response.text();
  let json: { error?: { code?: string; message?: string }; [key: string]: unknown } = {};
  try {
    json = JSON.parse(text) as typeof json;
  } catch {
    // not JSON
  }
  return { status: response.status, json, headers: response.headers };
}

const token = async () => (await alice.getAccessToken('microsoft')).accessToken;

describe('Microsoft stand-in: Graph tokens', () => {
  it('the sign-in token is for Outlook; a refresh with Graph scopes gives a Graph token; introspection shows it', async () => {
    const introspector = createIntrospector({ ...ms.introspection, ca: pki.ca.cert });
    try {
      const graphToken = await token();
      expect(alice.refreshes.at(-1)!.scope.split(' ').sort()).toEqual(['https://graph.microsoft.com/Mail.ReadWrite', GRAPH_MAIL_SEND_SCOPE]);
      expect(await introspector.introspect(graphToken)).toMatchObject({ active: true, aud: GRAPH_RESOURCE, sub: ALICE.email, email: ALICE.email });
      const outlook = await alice.outlookToken();
      expect(await introspector.introspect(outlook)).toMatchObject({ active: true, aud: OUTLOOK_RESOURCE, scope: OUTLOOK_SMTP_SCOPE });
    } finally {
      await introspector.close();
    }
  });

  it('a refresh with scope=…/Mail.Send offline_access answers that scope only', async () => {
    const { tokens, close } = await signInForGraph(ms, BOB, GRAPH_SEND_REQUEST_SCOPE);
    closers.push(close);
    await tokens.getAccessToken('microsoft');
    expect(tokens.refreshes.at(-1)!.scope).toBe(GRAPH_MAIL_SEND_SCOPE);
  });

  it('an app registration without Graph permissions gives no Graph token (invalid_scope); Outlook tokens as before', async () => {
    const noGraph = await startMicrosoftStandin({ pki, graphPermissions: [] });
    try {
      const { tokens, close } = await signInForGraph(noGraph, BOB, GRAPH_SEND_REQUEST_SCOPE);
      closers.push(close);
      await expect(tokens.getAccessToken('microsoft')).rejects.toMatchObject({ error: 'invalid_scope' });
      expect(await tokens.outlookToken()).toEqual(expect.any(String));
    } finally {
      await noGraph.close();
    }
  });
});

describe('Graph stand-in: tokens and permissions', () => {
  it('no token, a malformed header, an Outlook token: 401 InvalidAuthenticationToken with WWW-Authenticate', async () => {
    for (const auth of [undefined, 'Basic abc', 'Bearer ']) {
      const r = await call(`${graph.baseUrl}/me/sendMail`, { body: MIME.toString('base64'), type: 'text/plain', headers: auth ? { authorization: auth } : {} });
      expect(r.status).toBe(401);
      expect(r.json.error?.code).toBe('InvalidAuthenticationToken');
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer /);
    }
    const r = await call(`${graph.baseUrl}/me/sendMail`, { token: await alice.outlookToken(), body: MIME.toString('base64'), type: 'text/plain' });
    expect(r.status).toBe(401);
  });

  it('sendMail records the decoded MIME and the recipients from To, Cc and Bcc', async () => {
    const before = graph.messages.length;
    const r = await call(`${graph.baseUrl}/me/sendMail`, { token: await token(), body: MIME.toString('base64').replace(/.{76}/g, '$&\r\n'), type: 'text/plain' });
    expect(r.status).toBe(202);
    const [message] = graph.messages.slice(before);
    expect(message!.mime.equals(MIME)).toBe(true);
    expect(message).toMatchObject({ mailbox: ALICE.email, via: 'sendMail', recipients: ['bob@example.test', 'carol@example.test', 'dave@example.test'] });
  });

  it('/users/{other} with a delegated token is denied; an unknown path is 400', async () => {
    const r = await call(`${graph.baseUrl}/users/bob%40example.test/sendMail`, { token: await token(), body: MIME.toString('base64'), type: 'text/plain' });
    expect(r).toMatchObject({ status: 403, json: { error: { code: 'ErrorAccessDenied' } } });
    expect((await call(`${graph.baseUrl}/me/calendar`, { token: await token() })).status).toBe(400);
  });

  it('malformed base64, a non-text/plain MIME, no recipients', async () => {
    const t = await token();
    for (const body of ['not base64!', 'YWJj=', '']) {
      const r = await call(`${graph.baseUrl}/me/sendMail`, { token: t, body, type: 'text/plain' });
      expect(r).toMatchObject({ status: 400, json: { error: { code: 'ErrorMimeContentInvalidBase64String' } } });
    }
    expect((await call(`${graph.baseUrl}/me/sendMail`, { token: t, body: MIME.toString('base64'), type: 'application/octet-stream' })).status).toBe(400);
    const noRecipients = Buffer.from('From: alice@example.test\r\nSubject: x\r\n\r\nx\r\n').toString('base64');
    expect((await call(`${graph.baseUrl}/me/sendMail`, { token: t, body: noRecipients, type: 'text/plain' })).json.error?.code).toBe('ErrorInvalidRecipients');
  });

  it('a request over 4 MB gets 413 with Graph error JSON', async () => {
    const r = await call(`${graph.baseUrl}/me/sendMail`, { token: await token(), body: 'A'.repeat(4 * 1024 * 1024 + 4), type: 'text/plain' });
    expect(r.status).toBe(413);
    expect(r.json.error?.message).toMatch(/4MB/);
  });

  it('drafts need Mail.ReadWrite; sendMail needs only Mail.Send', async () => {
    const { tokens, close } = await signInForGraph(sendOnly, ALICE, GRAPH_SEND_REQUEST_SCOPE);
    closers.push(close);
    const t = (await tokens.getAccessToken('microsoft')).accessToken;
    expect((await call(`${graphSendOnly.baseUrl}/me/messages`, { token: t, body: MIME.toString('base64'), type: 'text/plain' })).json.error?.code).toBe('ErrorAccessDenied');
    expect((await call(`${graphSendOnly.baseUrl}/me/sendMail`, { token: t, body: MIME.toString('base64'), type: 'text/plain' })).status).toBe(202);
  });

  it('failNext answers as told, once, for the matching path only; denyMailbox refuses sending', async () => {
    graph.failNext({ status: 429, headers: { 'retry-after': '3' }, body: { error: { code: 'TooManyRequests' } } }, 1, /\/send$/);
    const t = await token();
    expect((await call(`${graph.baseUrl}/me/sendMail`, { token: t, body: MIME.toString('base64'), type: 'text/plain' })).status).toBe(202);
    const created = await call(`${graph.baseUrl}/me/messages`, { token: t, body: MIME.toString('base64'), type: 'text/plain' });
    const send = await call(`${graph.baseUrl}/me/messages/${String(created.json.id)}/send`, { token: t });
    expect(send.status).toBe(429);
    expect(send.headers.get('retry-after')).toBe('3');
    graph.denyMailbox(ALICE.email, 'ErrorSendAsDenied');
    expect((await call(`${graph.baseUrl}/me/messages/${String(created.json.id)}/send`, { token: t })).json.error?.code).toBe('ErrorSendAsDenied');
    graph.denyMailbox(ALICE.email, undefined);
    expect((await call(`${graph.baseUrl}/me/messages/${String(created.json.id)}/send`, { token: t })).status).toBe(202);
  });
});

describe('Graph stand-in: drafts and upload sessions', () => {
  async function uploadSession(size: number) {
    const t = await token();
    const created = await call(`${graph.baseUrl}/me/messages`, { token: t, type: 'application/json', body: JSON.stringify({ subject: 'big', body: { contentType: 'Text', content: 'see attachment' }, toRecipients: [{ emailAddress: { address: 'bob@example.test' } }] }) });
    expect(created.status).toBe(201);
    const id = String(created.json.id);
    const session = await call(`${graph.baseUrl}/me/messages/${id}/attachments/createUploadSession`, { token: t, type: 'application/json', body: JSON.stringify({ AttachmentItem: { attachmentType: 'file', name: 'a.bin', size } }) });
    expect(session).toMatchObject({ status: 201, json: { nextExpectedRanges: ['0-'] } });
    return { t, id, url: String(session.json.uploadUrl) };
  }
  const put = (url: string, body: Buffer, range: string | undefined, headers: Record<string, string> = {}) =>
    call(url, { method: 'PUT', body, type: 'application/octet-stream', headers: { ...(range ? { 'content-range': range } : {}), ...headers } });

  it('checks every range: no bearer, Content-Range well-formed, in order, as long as the body, 320 KiB multiples', async () => {
    const size = UPLOAD_RANGE_UNIT * 2 + 100;
    const data = Buffer.alloc(size, 7);
    const { t, id, url } = await uploadSession(size);
    expect((await put(url, data.subarray(0, UPLOAD_RANGE_UNIT), `bytes 0-${UPLOAD_RANGE_UNIT - 1}/${size}`, { authorization: `Bearer ${t}` })).status).toBe(401);
    expect((await put(url, data.subarray(0, UPLOAD_RANGE_UNIT), undefined)).status).toBe(400);
    expect((await put(url, data.subarray(0, UPLOAD_RANGE_UNIT), `bytes=0-${UPLOAD_RANGE_UNIT - 1}/${size}`)).status).toBe(400);
    expect((await put(url, data.subarray(0, 1000), `bytes 0-999/${size}`)).status).toBe(400);
    expect((await put(url, data.subarray(0, UPLOAD_RANGE_UNIT), `bytes 0-${UPLOAD_RANGE_UNIT}/${size}`)).status).toBe(400);
    expect((await put(url, data.subarray(0, UPLOAD_RANGE_UNIT), `bytes 0-${UPLOAD_RANGE_UNIT - 1}/${size + 1}`)).status).toBe(400);
    expect((await put(url, data.subarray(UPLOAD_RANGE_UNIT, UPLOAD_RANGE_UNIT * 2), `bytes ${UPLOAD_RANGE_UNIT}-${UPLOAD_RANGE_UNIT * 2 - 1}/${size}`)).status).toBe(416);
    const first = await put(url, data.subarray(0, UPLOAD_RANGE_UNIT * 2), `bytes 0-${UPLOAD_RANGE_UNIT * 2 - 1}/${size}`);
    expect(first).toMatchObject({ status: 200, json: { nextExpectedRanges: [`${UPLOAD_RANGE_UNIT * 2}-`] } });
    // Sending before the upload is complete is refused.
    expect((await call(`${graph.baseUrl}/me/messages/${id}/send`, { token: t })).status).toBe(400);
    expect((await put(url, data.subarray(UPLOAD_RANGE_UNIT * 2), `bytes ${UPLOAD_RANGE_UNIT * 2}-${size - 1}/${size}`)).status).toBe(201);
    const before = graph.messages.length;
    expect((await call(`${graph.baseUrl}/me/messages/${id}/send`, { token: t })).status).toBe(202);
    const [message] = graph.messages.slice(before);
    expect(message).toMatchObject({ via: 'draft', recipients: ['bob@example.test'] });
    expect(message!.attachments[0]).toMatchObject({ name: 'a.bin', uploaded: true });
    expect(message!.attachments[0]!.content.equals(data)).toBe(true);
    expect((await put(url, data.subarray(0, 1), `bytes 0-0/${size}`)).status).toBe(404);
  });

  it('a draft from MIME takes recipients from a PATCH; DELETE removes it; another mailbox cannot see it', async () => {
    const t = await token();
    const created = await call(`${graph.baseUrl}/me/messages`, { token: t, body: MIME.toString('base64'), type: 'text/plain' });
    const id = String(created.json.id);
    expect((await call(`${graph.baseUrl}/me/messages/${id}`, { method: 'PATCH', token: t, type: 'application/json', body: '{"toRecipients":' })).status).toBe(400);
    const patched = await call(`${graph.baseUrl}/me/messages/${id}`, { method: 'PATCH', token: t, type: 'application/json', body: JSON.stringify({ toRecipients: [{ emailAddress: { address: 'erin@example.test' } }], ccRecipients: [], bccRecipients: [] }) });
    expect(patched.status).toBe(200);
    const before = graph.messages.length;
    expect((await call(`${graph.baseUrl}/me/messages/${id}/send`, { token: t })).status).toBe(202);
    expect(graph.messages.slice(before)[0]).toMatchObject({ recipients: ['erin@example.test'], via: 'draft' });
    expect(graph.messages.slice(before)[0]!.mime.equals(MIME)).toBe(true);
    const other = await call(`${graph.baseUrl}/me/messages`, { token: t, body: MIME.toString('base64'), type: 'text/plain' });
    expect((await call(`${graph.baseUrl}/me/messages/${String(other.json.id)}`, { method: 'DELETE', token: t })).status).toBe(204);
    expect((await call(`${graph.baseUrl}/me/messages/${String(other.json.id)}/send`, { token: t })).status).toBe(404);
  });
});
