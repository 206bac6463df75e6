/** What every API route module shares: the error an answer is made of, the documented refusals, auditing. */
import type { FastifyRequest } from 'fastify';
import type { ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { OAuthAccounts } from '../oauth/accounts.js';
import type { OAuthService } from '../oauth/service.js';
import type { MessageQueue } from '../queue/queue.js';
import type { DeviceAccounts } from '../smtp-in/devices.js';
import type { RelaySettings } from '../smtp-in/relay-settings.js';
import type { EmailSettings } from '../smtp-out/email-settings.js';
import type { AuditLog } from '../store/audit.js';
import type { ApiAuthThrottle } from './auth-throttle.js';
import { ErrorBody } from './shapes.js';
import type { ApiToken, ApiTokens } from './tokens.js';

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
  /**
   * Requests each token may make per minute (default 600); past it, 429 with Retry-After. It keeps one
   * runaway script from starving the Remote UI and the relay, which share the process.
   */
  requestsPerMinute?: number | undefined;
}

/** Bodies the API reads are small; more is refused with 413 before it is parsed. */
export const BODY_LIMIT = 64 * 1024;

/** Who the audit log and the delivery log name for a change made through the API. */
export const actorOf = (token: ApiToken) => token.name;

/** Records a change made with the request's token, "(API)" in the detail. */
export function auditChange(audit: AuditLog, request: FastifyRequest, action: string, detail: string): Promise<void> {
  return audit.record(actorOf(request.apiToken!), action, `${detail} (API)`);
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

export const errorBody = (code: ErrorCode, message: string, fields?: Record<string, string>): ErrorBody => ({ error: { code, message, ...(fields ? { fields } : {}) } });

/** Error responses every authenticated route may give, for the OpenAPI document. */
export const AUTH_ERRORS = {
  401: ErrorBody.describe('No token, or a malformed, unknown, expired or revoked one'),
  403: ErrorBody.describe("The token's scope does not allow this request"),
  429: ErrorBody.describe('Too many failed authentications from this address'),
};
export const INPUT_ERRORS = { 400: ErrorBody.describe('The request failed validation'), 413: ErrorBody.describe('The body is larger than 64 KiB') };
