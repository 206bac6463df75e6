/**
 * The JSON API, `/api/v1`: an encapsulated Fastify plugin inside the Remote UI's app, for automation that
 * drives Postern without the Remote UI. Every route has zod schemas for its request and its responses; the
 * same schemas make the OpenAPI 3.1 document at `/api/v1/openapi.json` (docs/api.md).
 *
 * Inputs: HTTP requests with `Authorization: Bearer <token>` (RFC 6750 §2.1), tokens made on the API Tokens
 * page (src/api/tokens.ts). Outputs: JSON, and calls into the owners (MessageQueue, OAuthService,
 * DeviceAccounts, EmailSettings, RelaySettings, AuditLog); every change is audited with the token's name.
 *
 * Failure modes: a missing, malformed, unknown, expired or revoked token is answered 401 with
 * `WWW-Authenticate: Bearer` (RFC 6750 §3); a scope that does not allow the request 403; too many failed
 * authentications from one address 429 (src/api/auth-throttle.ts); every error is `{ "error": { "code",
 * "message" } }` with a code from src/errors.ts, never a stack trace. The API is not cookie-authenticated: a
 * session cookie neither signs a request in nor is set on a response, so no CSRF token is needed.
 * Known limits: the throttle counts per process; bodies are limited to 64 KiB.
 */
import fastifySwagger from '@fastify/swagger';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorCodes, type ErrorCode } from '../errors.js';
import { describeError, scrubSecrets, type Logger } from '../log.js';
import type { OAuthAccounts } from '../oauth/accounts.js';
import { PROVIDER_LABELS } from '../oauth/profiles.js';
import type { OAuthService } from '../oauth/service.js';
import type { MessageQueue } from '../queue/queue.js';
import { parseAllowedSenders } from '../smtp-in/allowed-senders.js';
import { validateDevicePassword, validateDeviceUsername, type DeviceAccount, type DeviceAccounts } from '../smtp-in/devices.js';
import type { RelaySettings, RelaySettingsInput, RelaySettingsView } from '../smtp-in/relay-settings.js';
import { TLS_MODE_LABELS, type EmailSettings, type EmailSettingsInput, type EmailSettingsView } from '../smtp-out/email-settings.js';
import type { AuditLog } from '../store/audit.js';
import { generatePassword } from '../store/passwords.js';
import type { ApiScope } from '../store/schema.js';
import { ApiAuthThrottle } from './auth-throttle.js';
import {
  buildQueueList,
  buildStatus,
  DEFAULT_QUEUE_LIMIT,
  Device,
  deviceShape,
  EmailSettingsShape,
  emailSettingsShape,
  ErrorBody,
  LogEntryShape,
  logEntryShape,
  MAX_QUEUE_LIMIT,
  messageShape,
  QUEUE_FILTERS,
  QueueBody,
  QueueMessage,
  RelaySettingsShape,
  relaySettingsShape,
  SettingsBody,
  StatusBody,
} from './shapes.js';
import { scopeAllows, type ApiToken, type ApiTokens } from './tokens.js';

export const API_PREFIX = '/api/v1';
const REALM = 'Postern API';
const BODY_LIMIT = 64 * 1024;
/** Who the delivery log names for Retry Now and Delete made through the API. */
const actorOf = (token: ApiToken) => token.name;

declare module 'fastify' {
  interface FastifyRequest {
    /** The API token the request authenticated with (API routes only). */
    apiToken?: ApiToken;
  }
  interface FastifyContextConfig {
    /** API routes: the scope a token needs; `public`: no token at all (the OpenAPI document). */
    apiScope?: ApiScope | 'public';
  }
}

export interface ApiDependencies {
  tokens: ApiTokens;
  accounts: Pick<OAuthAccounts, 'list'>;
  oauth: Pick<OAuthService, 'status'>;
  queue: MessageQueue;
  /** Wakes the queue manager (Retry Now). */
  kick(): void;
  devices: DeviceAccounts;
  emailSettings: EmailSettings;
  relaySettings: RelaySettings;
  audit: AuditLog;
  log: Logger;
  /** Failed authentications per address; a fresh one when absent. */
  throttle?: ApiAuthThrottle;
}

/** An error the API answers with: status, catalogue code and message. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: ErrorCode,
    message: string,
    readonly fields?: Record<string, string>,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const errorBody = (code: ErrorCode, message: string, fields?: Record<string, string>): ErrorBody => ({ error: { code, message, ...(fields ? { fields } : {}) } });

/** Error responses every authenticated route may give, for the OpenAPI document. */
const AUTH_ERRORS = {
  401: ErrorBody.describe('No token, or a malformed, unknown, expired or revoked one'),
  403: ErrorBody.describe("The token's scope does not allow this request"),
  429: ErrorBody.describe('Too many failed authentications from this address'),
};
const INPUT_ERRORS = { 400: ErrorBody.describe('The request failed validation'), 413: ErrorBody.describe('The body is larger than 64 KiB') };

const QueueId = z.object({ id: z.string().max(100).describe('The message id (a UUID)') });
const DeviceName = z.object({ name: z.string().max(200).describe('The device account\'s User Name') });
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Allowed Sender Addresses as the Relay Settings page reads them, with its wording. */
function readAllowedSenders(list: string[]): { entries: string[]; error?: string } {
  const parsed = parseAllowedSenders(list.join('\n'));
  if (parsed.errors.length === 0) return { entries: parsed.entries };
  const more = parsed.errors.length > 5 ? ` (and ${parsed.errors.length - 5} more)` : '';
  return { entries: [], error: `${parsed.errors.slice(0, 5).join('; ')}${more}. Give each entry as an address (scanner@example.com) or @domain (@example.com).` };
}

const sendersDetail = (entries: string[]) => (entries.length > 0 ? `allowed senders [${entries.join(' ')}]` : 'any sender');

function emailFormOf(settings: EmailSettingsView): EmailSettingsInput {
  return {
    accountId: settings.accountId,
    smtpHost: settings.smtpHost,
    smtpPort: String(settings.smtpPort),
    tlsMode: settings.tlsMode,
    verifyServerCertificate: settings.tls.verifyServerCertificate,
    addCnToVerificationItems: settings.tls.addCnToVerificationItems,
    senderAddress: settings.senderAddress ?? '',
    allowedFromAddresses: settings.allowedFromAddresses.join('\n'),
    messagesPerMinute: String(settings.messagesPerMinute),
  };
}

function relayFormOf(settings: RelaySettingsView): RelaySettingsInput {
  return {
    allowedNetworks: settings.allowedNetworks.join('\n'),
    maxMessageSizeMb: String(Math.round((settings.maxMessageSize / 1024 / 1024) * 100) / 100),
    allowInsecureAuth: settings.allowInsecureAuth,
    allowLegacyTls: settings.allowLegacyTls,
    bareNewlines: settings.bareNewlines,
  };
}

/** Field errors of the owners' validate(), as one message and per field. */
function invalidSettings(errors: Partial<Record<string, string>>): ApiError {
  const fields = Object.fromEntries(Object.entries(errors).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));
  return new ApiError(400, ErrorCodes.WEB_INVALID_INPUT, Object.values(fields).join(' '), fields);
}

/** A request validation failure in words: where and what, for the first few issues. */
function validationMessage(error: { validation?: Array<{ instancePath?: string; message?: string }>; validationContext?: string }): string {
  const issues = (error.validation ?? []).slice(0, 5).map((issue) => {
    const where = `${error.validationContext ?? 'request'}${(issue.instancePath ?? '').replace(/\//g, '.')}`;
    return `${where}: ${issue.message ?? 'invalid'}`;
  });
  return `The request is not valid: ${issues.join('; ') || 'it does not match the schema'}.`;
}

export const apiPlugin: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
  const throttle = deps.throttle ?? new ApiAuthThrottle();
  const log = deps.log.child({ component: 'api' });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // JSON only: the Remote UI's form parser is not for the API.
  app.removeContentTypeParser('application/x-www-form-urlencoded');

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Postern API',
        version: '1.0.0',
        description: 'Drive Postern without the Remote UI: status, queue, log, relay device accounts and settings. See docs/api.md.',
      },
      components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API token (pst_…) from Settings/Registration > Management > API Tokens' } } },
      security: [{ bearerAuth: [] }],
    },
    transform: jsonSchemaTransform,
  });

  app.decorateRequest('apiToken', undefined);

  const reject = (reply: FastifyReply, status: number, code: ErrorCode, message: string, challenge?: string) => {
    if (challenge !== undefined) reply.header('www-authenticate', challenge);
    return reply.code(status).type('application/json; charset=utf-8').send(errorBody(code, message));
  };
  const challenge = (description: string) => `Bearer realm="${REALM}", error="invalid_token", error_description="${description}"`;

  /** RFC 6750 §2.1: `Authorization: Bearer <token>`; before the body is read, so a stranger's body is never parsed. */
  const authenticate = async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization;
    if (header === undefined || header.trim() === '') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_MISSING, 'Send an API token: Authorization: Bearer <token>.', `Bearer realm="${REALM}"`);
    }
    const address = request.ip;
    const attempt = await throttle.reserve(address);
    if (!attempt.allowed) {
      log.warn({ address }, 'API request refused: too many failed authentications');
      reply.header('retry-after', String(attempt.retryAfterSeconds));
      return reject(reply, 429, ErrorCodes.API_RATE_LIMITED, `Too many failed authentications from ${address}. Try again in ${attempt.retryAfterSeconds} seconds.`);
    }
    let result;
    try {
      const match = /^Bearer +([^\s]+) *$/i.exec(header);
      result = match ? await deps.tokens.authenticate(match[1]!) : ({ ok: false, reason: 'invalid' } as const);
    } catch (error) {
      // Not the client's failure: the reservation is given back.
      attempt.succeeded();
      throw error;
    }
    if (result.ok) {
      attempt.succeeded();
      request.apiToken = result.token;
      return;
    }
    attempt.failed();
    const name = 'token' in result ? result.token.name : null;
    await deps.audit.record(name, 'api.auth_failed', `from ${address}: ${result.reason}`);
    log.warn({ address, reason: result.reason, tokenName: name }, 'API authentication failed');
    if (result.reason === 'expired') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_EXPIRED, `The API token ${name} expired on ${new Date(result.token.expiresAt).toISOString().slice(0, 10)}. Create a new one on the API Tokens page.`, challenge('The token expired'));
    }
    if (result.reason === 'revoked') {
      return reject(reply, 401, ErrorCodes.API_TOKEN_REVOKED, `The API token ${name} was revoked. Create a new one on the API Tokens page.`, challenge('The token was revoked'));
    }
    return reject(reply, 401, ErrorCodes.API_TOKEN_INVALID, 'The API token is not valid (malformed or unknown). Send Authorization: Bearer pst_…', challenge('The token is not valid'));
  };

  app.addHook('onRequest', async (request, reply) => {
    // An unknown path needs a token too (it says nothing to a stranger), but any scope may be told it is unknown.
    const scope = request.is404 ? 'read' : request.routeOptions.config.apiScope;
    if (scope === 'public') return;
    await authenticate(request, reply);
    if (reply.sent) return reply;
    if (!request.apiToken) throw new Error('API request neither authenticated nor refused');
    const needed = scope ?? 'administer';
    if (!scopeAllows(request.apiToken.scope, needed)) {
      return reject(
        reply,
        403,
        ErrorCodes.API_SCOPE_INSUFFICIENT,
        `The API token ${request.apiToken.name} has scope ${request.apiToken.scope}; this request needs ${needed}.`,
        `Bearer realm="${REALM}", error="insufficient_scope", scope="${needed}"`,
      );
    }
  });

  app.addHook('onSend', async (_request, reply, payload) => {
    // The API is not cookie-authenticated: no session cookie is set (or renewed) by its answers.
    reply.removeHeader('set-cookie');
    reply.header('cache-control', 'no-store');
    return payload;
  });

  app.setNotFoundHandler(async (request, reply) =>
    reject(reply, 404, ErrorCodes.API_NOT_FOUND, `There is no API endpoint ${request.method} ${request.url.split('?')[0]}.`),
  );

  app.setErrorHandler(async (error: Error & { code?: string; statusCode?: number; validation?: unknown[]; validationContext?: string }, request, reply) => {
    if (error instanceof ApiError) return reply.code(error.statusCode).send(errorBody(error.code, error.message, error.fields));
    if (error.validation) return reply.code(400).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, validationMessage(error as never)));
    if (error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'Send the body as JSON (Content-Type: application/json).'));
    }
    if (error.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'The body is larger than 64 KiB.'));
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || error instanceof SyntaxError) {
      return reply.code(400).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, 'The body is not valid JSON.'));
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(error.statusCode).send(errorBody(ErrorCodes.WEB_INVALID_INPUT, scrubSecrets(error.message)));
    }
    request.log.error({ err: describeError(error), reqId: request.id, method: request.method, path: request.url.split('?')[0] }, 'unexpected error in the API');
    return reply.code(500).send(errorBody(ErrorCodes.API_UNEXPECTED, `An unexpected error occurred. It was logged with reference ${request.id}.`));
  });

  const audit = (request: FastifyRequest, action: string, detail: string) => deps.audit.record(actorOf(request.apiToken!), action, `${detail} (API)`);

  // ---- the OpenAPI document --------------------------------------------------------------------------

  app.get(
    '/openapi.json',
    { config: { apiScope: 'public' }, schema: { summary: 'This API as an OpenAPI 3.1 document (no token needed)', tags: ['meta'], security: [] } },
    async () => app.swagger(),
  );

  // ---- status ------------------------------------------------------------------------------------------

  app.get(
    '/status',
    {
      config: { apiScope: 'read' },
      schema: { summary: 'Each OAuth account (Use, mailbox, Token Status, Server Connection Status) and the queue counts', tags: ['status'], response: { 200: StatusBody, ...AUTH_ERRORS } },
    },
    async () => buildStatus({ accounts: deps.accounts, oauth: deps.oauth, queue: deps.queue }),
  );

  // ---- queue -------------------------------------------------------------------------------------------

  app.get(
    '/queue',
    {
      config: { apiScope: 'read' },
      schema: {
        summary: 'Messages in the queue, newest first',
        tags: ['queue'],
        querystring: z.object({
          state: z.enum(QUEUE_FILTERS).default('waiting').describe('waiting (not finished: incoming, active, deferred, held), all, or one state'),
          limit: z.coerce.number().int().min(1).max(MAX_QUEUE_LIMIT).default(DEFAULT_QUEUE_LIMIT),
        }),
        response: { 200: QueueBody, 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => buildQueueList(deps.queue, { state: request.query.state, limit: request.query.limit }),
  );

  const waitingMessage = async (id: string) => {
    const message = UUID.test(id) ? await deps.queue.get(id) : undefined;
    if (!message) throw new ApiError(404, ErrorCodes.API_NOT_FOUND, `There is no message ${id} in the queue.`);
    return message;
  };

  app.post(
    '/queue/:id/retry',
    {
      config: { apiScope: 'operate' },
      schema: {
        summary: 'Retry Now: a deferred or held message is due at once',
        tags: ['queue'],
        params: QueueId,
        response: { 200: z.object({ message: QueueMessage }), 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const message = await waitingMessage(request.params.id);
      if (!(await deps.queue.retryNow(message.id, actorOf(request.apiToken!)))) {
        throw new ApiError(409, ErrorCodes.API_CONFLICT, 'That message is no longer waiting (it is being sent, or was sent, returned or deleted).');
      }
      deps.kick();
      await audit(request, 'queue.retry', message.id);
      return { message: messageShape((await deps.queue.get(message.id)) ?? message) };
    },
  );

  app.delete(
    '/queue/:id',
    {
      config: { apiScope: 'operate' },
      schema: {
        summary: 'Delete a waiting message without sending it (its sender is not told)',
        tags: ['queue'],
        params: QueueId,
        response: { 200: z.object({ deleted: QueueMessage }), 404: ErrorBody, 409: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const message = await waitingMessage(request.params.id);
      const removed = await deps.queue.remove(message.id, actorOf(request.apiToken!));
      if (!removed) throw new ApiError(409, ErrorCodes.API_CONFLICT, 'That message cannot be deleted now (it is being sent, or was already sent, returned or deleted).');
      await audit(request, 'queue.deleted', `${removed.id} from ${removed.reversePath || '<>'} to ${removed.recipients.join(', ')}`);
      return { deleted: messageShape(removed) };
    },
  );

  // ---- log ---------------------------------------------------------------------------------------------

  app.get(
    '/log',
    {
      config: { apiScope: 'read' },
      schema: {
        summary: 'The delivery log, newest first',
        tags: ['log'],
        querystring: z.object({
          limit: z.coerce.number().int().min(1).max(1000).default(300),
          id: z.string().regex(UUID).optional().describe('Only this message'),
        }),
        response: { 200: z.object({ entries: z.array(LogEntryShape) }), 400: ErrorBody, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const entries = await deps.queue.logEntries({ limit: request.query.limit, ...(request.query.id ? { queueId: request.query.id } : {}) });
      return { entries: entries.map(logEntryShape) };
    },
  );

  // ---- relay device accounts ---------------------------------------------------------------------------

  const deviceNamed = async (name: string): Promise<DeviceAccount> => {
    const device = (await deps.devices.list()).find((d) => d.username === name);
    if (!device) throw new ApiError(404, ErrorCodes.API_NOT_FOUND, 'There is no device account with that User Name.');
    return device;
  };

  app.get(
    '/devices',
    { config: { apiScope: 'read' }, schema: { summary: 'Relay device accounts', tags: ['devices'], response: { 200: z.object({ devices: z.array(Device) }), ...AUTH_ERRORS } } },
    async () => ({ devices: (await deps.devices.list()).map(deviceShape) }),
  );

  app.post(
    '/devices',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Add a device account; its password is returned once',
        tags: ['devices'],
        body: z.object({
          username: z.string().max(1000),
          password: z.string().max(1000).optional().describe('8 to 256 characters; generated when absent'),
          allowedSenders: z.array(z.string().max(1000)).max(1000).default([]),
        }),
        response: { 201: z.object({ device: Device, password: z.string().describe('Shown only in this answer') }), 409: ErrorBody, ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request, reply) => {
      const username = request.body.username.trim();
      const password = request.body.password ?? generatePassword();
      const fields: Record<string, string> = {};
      const nameError = validateDeviceUsername(username);
      if (nameError) fields.username = nameError;
      const passwordError = validateDevicePassword(password);
      if (passwordError) fields.password = passwordError;
      const senders = readAllowedSenders(request.body.allowedSenders);
      if (senders.error) fields.allowedSenders = senders.error;
      if (Object.keys(fields).length > 0) throw new ApiError(400, ErrorCodes.WEB_INVALID_INPUT, Object.values(fields).join(' '), fields);
      if (await deps.devices.exists(username)) {
        throw new ApiError(409, ErrorCodes.API_CONFLICT, `A device account named ${username} already exists.`, { username: `A device account named ${username} already exists.` });
      }
      const device = await deps.devices.create(username, password, senders.entries);
      await audit(request, 'relay-device.added', `${username}, ${sendersDetail(senders.entries)}`);
      return reply.code(201).send({ device: deviceShape(device), password });
    },
  );

  app.patch(
    '/devices/:name',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: "Change a device account's Allowed Sender Addresses or password",
        tags: ['devices'],
        params: DeviceName,
        body: z.object({
          allowedSenders: z.array(z.string().max(1000)).max(1000).optional(),
          password: z.string().max(1000).optional(),
        }),
        response: { 200: z.object({ device: Device }), 404: ErrorBody, ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const device = await deviceNamed(request.params.name);
      const fields: Record<string, string> = {};
      const senders = request.body.allowedSenders === undefined ? undefined : readAllowedSenders(request.body.allowedSenders);
      if (senders?.error) fields.allowedSenders = senders.error;
      const passwordError = request.body.password === undefined ? undefined : validateDevicePassword(request.body.password);
      if (passwordError) fields.password = passwordError;
      if (Object.keys(fields).length > 0) throw new ApiError(400, ErrorCodes.WEB_INVALID_INPUT, Object.values(fields).join(' '), fields);
      if (senders) {
        await deps.devices.setAllowedSenders(device.id, senders.entries);
        await audit(request, 'relay-device.changed', `${device.username}, ${sendersDetail(senders.entries)}`);
      }
      if (request.body.password !== undefined) {
        await deps.devices.setPassword(device.id, request.body.password);
        await audit(request, 'relay-device.password_changed', device.username);
      }
      const after = await deps.devices.find(device.id);
      if (!after) throw new ApiError(404, ErrorCodes.API_NOT_FOUND, 'The device account was removed meanwhile.');
      return { device: deviceShape(after) };
    },
  );

  app.delete(
    '/devices/:name',
    {
      config: { apiScope: 'administer' },
      schema: { summary: 'Remove a device account', tags: ['devices'], params: DeviceName, response: { 200: z.object({ removed: Device }), 404: ErrorBody, ...AUTH_ERRORS } },
    },
    async (request) => {
      const device = await deviceNamed(request.params.name);
      const removed = await deps.devices.remove(device.id);
      if (!removed) throw new ApiError(404, ErrorCodes.API_NOT_FOUND, 'The device account was already removed.');
      await audit(request, 'relay-device.removed', removed.username);
      return { removed: deviceShape(removed) };
    },
  );

  // ---- settings ----------------------------------------------------------------------------------------

  const settingsBody = async () => ({
    email: emailSettingsShape(await deps.emailSettings.get()),
    relay: relaySettingsShape(await deps.relaySettings.get(), await deps.relaySettings.certificate()),
  });

  app.get(
    '/settings',
    { config: { apiScope: 'read' }, schema: { summary: 'E-Mail Settings and Relay Settings (never a secret)', tags: ['settings'], response: { 200: SettingsBody, ...AUTH_ERRORS } } },
    settingsBody,
  );

  app.patch(
    '/settings/email',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Change E-Mail Settings: the fields given; checked as the E-Mail Settings page checks them',
        tags: ['settings'],
        body: z.object({
          accountId: z.string().max(100).optional().describe('microsoft or google'),
          smtpHost: z.string().max(1000).optional(),
          smtpPort: z.number().optional(),
          tlsMode: z.string().max(100).optional().describe('starttls or tls'),
          verifyServerCertificate: z.boolean().optional(),
          addCnToVerificationItems: z.boolean().optional(),
          senderAddress: z.string().max(1000).nullable().optional().describe('null or "": the authorized mailbox'),
          allowedFromAddresses: z.array(z.string().max(1000)).max(1000).optional(),
          messagesPerMinute: z.number().optional().describe('0: no limit'),
        }),
        response: { 200: z.object({ email: EmailSettingsShape }), ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const body = request.body;
      const form = emailFormOf(await deps.emailSettings.get());
      const input: EmailSettingsInput = {
        accountId: body.accountId ?? form.accountId,
        smtpHost: body.smtpHost ?? form.smtpHost,
        smtpPort: body.smtpPort === undefined ? form.smtpPort : String(body.smtpPort),
        tlsMode: body.tlsMode ?? form.tlsMode,
        verifyServerCertificate: body.verifyServerCertificate ?? form.verifyServerCertificate,
        addCnToVerificationItems: body.addCnToVerificationItems ?? form.addCnToVerificationItems,
        senderAddress: body.senderAddress === undefined ? form.senderAddress : (body.senderAddress ?? ''),
        allowedFromAddresses: body.allowedFromAddresses === undefined ? form.allowedFromAddresses : body.allowedFromAddresses.join('\n'),
        messagesPerMinute: body.messagesPerMinute === undefined ? form.messagesPerMinute : String(body.messagesPerMinute),
      };
      const result = deps.emailSettings.validate(input);
      if (!result.ok) throw invalidSettings(result.errors);
      await deps.emailSettings.save(result.value);
      const v = result.value;
      await audit(
        request,
        'email-settings.saved',
        `${PROVIDER_LABELS[v.accountId]} via ${v.smtpHost}:${v.smtpPort} ${TLS_MODE_LABELS[v.tlsMode]}, sender ${v.senderAddress ?? 'the authorized mailbox'}, verify ${v.tls.verifyServerCertificate ? 'on' : 'off'}, CN ${v.tls.addCnToVerificationItems ? 'on' : 'off'}, ${v.messagesPerMinute}/min`,
      );
      return { email: emailSettingsShape(await deps.emailSettings.get()) };
    },
  );

  app.patch(
    '/settings/relay',
    {
      config: { apiScope: 'administer' },
      bodyLimit: BODY_LIMIT,
      schema: {
        summary: 'Change Relay Settings: the fields given; checked as the Relay Settings page checks them',
        tags: ['settings'],
        body: z.object({
          allowedNetworks: z.array(z.string().max(1000)).max(1000).optional(),
          maxMessageSizeMb: z.number().optional(),
          allowInsecureAuth: z.boolean().optional(),
          allowLegacyTls: z.boolean().optional(),
          bareNewlines: z.string().max(100).optional().describe('normalize or reject'),
        }),
        response: { 200: z.object({ relay: RelaySettingsShape }), ...INPUT_ERRORS, ...AUTH_ERRORS },
      },
    },
    async (request) => {
      const body = request.body;
      const form = relayFormOf(await deps.relaySettings.get());
      const input: RelaySettingsInput = {
        allowedNetworks: body.allowedNetworks === undefined ? form.allowedNetworks : body.allowedNetworks.join('\n'),
        maxMessageSizeMb: body.maxMessageSizeMb === undefined ? form.maxMessageSizeMb : String(body.maxMessageSizeMb),
        allowInsecureAuth: body.allowInsecureAuth ?? form.allowInsecureAuth,
        allowLegacyTls: body.allowLegacyTls ?? form.allowLegacyTls,
        bareNewlines: body.bareNewlines ?? form.bareNewlines,
      };
      const result = deps.relaySettings.validate(input);
      if (!result.ok) throw invalidSettings(result.errors);
      await deps.relaySettings.save(result.value);
      const v = result.value;
      await audit(
        request,
        'relay-settings.saved',
        `networks [${v.allowedNetworks.join(' ')}], max ${v.maxMessageSize} bytes, bare CR/LF ${v.bareNewlines}, insecure AUTH ${v.allowInsecureAuth ? 'on' : 'off'}, legacy TLS ${v.allowLegacyTls ? 'on' : 'off'}`,
      );
      return { relay: relaySettingsShape(await deps.relaySettings.get(), await deps.relaySettings.certificate()) };
    },
  );
};
