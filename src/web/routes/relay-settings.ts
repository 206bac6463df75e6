/**
 * Relay Settings (Settings/Registration > Send): how devices reach Postern. Allowed Networks, maximum
 * message size, the bare CR/LF policy, the legacy switches, device accounts (User Name / Password, and the
 * Allowed Sender Addresses each may use as MAIL FROM) and the relay's STARTTLS certificate (generated at first
 * start, or uploaded).
 *
 * Routing (smtp-in/routing.ts): each device account, and each saved Allowed Networks entry, has a Sending
 * Account, the Default unless one is chosen. An entry taken out of Allowed Networks takes its choice with it.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { X509Certificate } from 'node:crypto';
import { isPosternError } from '../../errors.js';
import type { AuditLog } from '../../store/audit.js';
import { parseAllowedSenders } from '../../smtp-in/allowed-senders.js';
import { validateDevicePassword, validateDeviceUsername, type DeviceAccount, type DeviceAccounts } from '../../smtp-in/devices.js';
import { relaySettingsInputOf, type RelayCertificate, type RelaySettings, type RelaySettingsErrors, type RelaySettingsInput, type RelaySettingsView } from '../../smtp-in/relay-settings.js';
import { z } from 'zod';
import type { OAuthAccounts } from '../../oauth/accounts.js';
import type { SendingRoutes } from '../../smtp-in/routing.js';
import type { WebPluginOptions } from '../context.js';
import { button, checkbox, formBody, idParams, LINE_MAX, LIST_MAX, none, PEM_MAX, text } from '../form.js';
import type { Translate } from '../i18n/index.js';
import { displayNameOf, oauthPathOf } from './oauth-account.js';
import { accountChoices, orderedAccounts } from './sending-accounts.js';

/** A field the page repeats (one per Allowed Networks entry): every value, in order. */
function repeated() {
  return z
    .union([z.string().max(LINE_MAX), z.array(z.string().max(LINE_MAX)).max(10_000)], { error: 'is not text' })
    .optional()
    .transform((value) => (value === undefined ? [] : Array.isArray(value) ? value : [value]));
}

export const RELAY_SETTINGS_PATH = '/settings/send/relay';

const SENDERS_HINT = 'Write one per line: an address (scanner@example.com) or @domain (@example.com).';

/** The page's Allowed Sender Addresses text: the entries, or the field error naming the bad ones. */
function readAllowedSenders(lines: string): { entries: string[]; error?: string } {
  const parsed = parseAllowedSenders(lines);
  if (parsed.errors.length === 0) return { entries: parsed.entries };
  const more = parsed.errors.length > 5 ? ` (and ${parsed.errors.length - 5} more)` : '';
  return { entries: [], error: `${parsed.errors.slice(0, 5).join('; ')}${more}. ${SENDERS_HINT}` };
}

/** For the audit log. */
function sendersDetail(entries: string[]): string {
  return entries.length > 0 ? `allowed senders [${entries.join(' ')}]` : 'any sender';
}

export interface RelaySettingsPageDependencies {
  relaySettings: RelaySettings;
  devices: DeviceAccounts;
  routes: Pick<SendingRoutes, 'networkAccounts' | 'setNetworkAccounts'>;
  accounts: Pick<OAuthAccounts, 'listByProvider' | 'get'>;
  audit: AuditLog;
  /** Where the relay listens (known once started). */
  listener(): { host: string; port: number };
  /** Names for a newly generated certificate. */
  certificateNames(): string[];
}


export const relaySettingsRoutes: FastifyPluginAsyncZod<WebPluginOptions & { deps: RelaySettingsPageDependencies }> = async (app, { web, deps }) => {
  const certificateView = async () => {
    const certificate: RelayCertificate | undefined = await deps.relaySettings.certificate();
    return certificate ? { ...certificate, key: undefined, cert: undefined } : undefined;
  };
  /** The account choices (the Default first), and the words for an account id in the lists. */
  const accountsView = async (t: Translate) => {
    const rows = await orderedAccounts(deps.accounts);
    const byId = new Map(rows.map((row) => [row.id, row]));
    return {
      choices: accountChoices(rows, t, true),
      accountName: (id: string | null) => {
        if (!id) return t('account.defaultChoice');
        const row = byId.get(id);
        return row ? displayNameOf(row, t) : id;
      },
      accountPath: (id: string | null) => {
        const row = id ? byId.get(id) : undefined;
        return row ? oauthPathOf(row.id, row.provider) : undefined;
      },
    };
  };
  const page = async (request: FastifyRequest, extra: { form?: RelaySettingsInput; errors?: RelaySettingsErrors & { networkAccounts?: string }; networkAccounts?: Record<string, string> } = {}) => {
    const settings = await deps.relaySettings.get();
    const saved = extra.networkAccounts ?? (await deps.routes.networkAccounts());
    return {
      title: 'Relay Settings',
      base: RELAY_SETTINGS_PATH,
      listener: deps.listener(),
      form: extra.form ?? relaySettingsInputOf(settings),
      errors: extra.errors ?? {},
      devices: await deps.devices.list(),
      certificate: await certificateView(),
      networks: settings.allowedNetworks.map((entry) => ({ entry, accountId: saved[entry] ?? '' })),
      ...(await accountsView(request.t)),
    };
  };
  const addPage = async (request: FastifyRequest, device = { username: '', allowedSenders: '', sendingAccountId: '', errors: {} as Record<string, string> }) => ({
    title: request.t('relay.addDevice'),
    base: RELAY_SETTINGS_PATH,
    device,
    ...(await accountsView(request.t)),
  });
  /** The account a select names: '' is the Default (null); an id no account has is refused. */
  const chosenAccount = async (value: string): Promise<{ ok: true; id: string | null } | { ok: false }> => {
    if (value === '') return { ok: true, id: null };
    const row = await deps.accounts.get(value);
    return row ? { ok: true, id: row.id } : { ok: false };
  };
  const certificatePage = async (request: FastifyRequest, upload: { cert: string; error?: string } = { cert: '' }) => ({
    title: request.t('relay.certificate'),
    base: RELAY_SETTINGS_PATH,
    certificate: await certificateView(),
    upload,
  });

  // E-Mail Settings goes first, then Relay Settings: both ahead of the seed's OAuth pages.
  const at = web.sendMenu.findIndex((item) => item.href === '/settings/send/email');
  web.sendMenu.splice(at >= 0 ? at + 1 : 0, 0, { href: RELAY_SETTINGS_PATH, label: 'Relay Settings', labelKey: 'menu.relay' });

  app.get(RELAY_SETTINGS_PATH, { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) => reply.render('relay-settings', await page(request)));

  // Each form with typed-in work has a page of its own, so that no other form's button can discard it.
  app.get(`${RELAY_SETTINGS_PATH}/devices/new`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) =>
    reply.render('relay-device-add', await addPage(request)),
  );
  app.get(`${RELAY_SETTINGS_PATH}/certificate`, { preValidation: web.requireSendSettings, schema: { querystring: none } }, async (request, reply) =>
    reply.render('relay-certificate', await certificatePage(request)),
  );

  // The certificate for devices to import: PEM (the whole chain as presented) or DER (the server certificate).
  const download = (format: 'pem' | 'der') => async (_request: FastifyRequest, reply: FastifyReply) => {
    const certificate = await deps.relaySettings.certificate();
    if (!certificate) return reply.code(404).type('text/plain; charset=utf-8').send('no certificate');
    const body = format === 'pem' ? Buffer.from(certificate.cert.trim() + '\n') : new X509Certificate(certificate.cert).raw;
    return reply
      .type(format === 'pem' ? 'application/x-pem-file' : 'application/pkix-cert')
      .header('content-disposition', `attachment; filename="postern-relay.${format === 'pem' ? 'pem' : 'cer'}"`)
      .header('cache-control', 'no-store')
      .send(body);
  };
  app.get(`${RELAY_SETTINGS_PATH}/certificate.pem`, { preValidation: web.requireLogin, schema: { querystring: none } }, download('pem'));
  app.get(`${RELAY_SETTINGS_PATH}/certificate.der`, { preValidation: web.requireLogin, schema: { querystring: none } }, download('der'));

  const settingsForm = formBody({
    allowedNetworks: text(LIST_MAX),
    maxMessageSizeMb: text(),
    allowInsecureAuth: checkbox(),
    allowLegacyTls: checkbox(),
    bareNewlines: text(),
    /** The saved entries the table lists, and the Sending Account chosen for each, in the same order. */
    networkEntry: repeated(),
    networkAccount: repeated(),
  });
  app.post(RELAY_SETTINGS_PATH, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: settingsForm } }, async (request, reply) => {
    const { networkEntry, networkAccount, ...fields } = request.body;
    const form: RelaySettingsInput = fields;
    const result = deps.relaySettings.validate(form);
    if (!result.ok) return reply.render('relay-settings', await page(request, { form, errors: result.errors }), 400);
    // Every choice is checked before anything is saved: a refused one leaves Relay Settings as they were.
    const kept = new Set(result.value.allowedNetworks);
    const map: Record<string, string> = {};
    const unknown: string[] = [];
    for (const [index, entry] of networkEntry.entries()) {
      const chosen = await chosenAccount(networkAccount[index] ?? '');
      if (!chosen.ok) unknown.push(entry.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 80));
      else if (chosen.id && kept.has(entry)) map[entry] = chosen.id;
    }
    if (unknown.length > 0 || networkAccount.length > networkEntry.length) {
      const errors = { networkAccounts: request.t('relay.networkAccountUnknown', { entries: unknown.slice(0, 5).join(', ') || '?' }) };
      return reply.render('relay-settings', await page(request, { form, errors }), 400);
    }
    await deps.relaySettings.save(result.value);
    await deps.routes.setNetworkAccounts(map);
    const v = result.value;
    const routed = Object.entries(map).map(([entry, id]) => `${entry} → ${id}`);
    await deps.audit.record(
      request.user!.username,
      'relay-settings.saved',
      `networks [${v.allowedNetworks.join(' ')}]${routed.length > 0 ? ` routed [${routed.join(', ')}]` : ''}, max ${v.maxMessageSize} bytes, bare CR/LF ${v.bareNewlines}, insecure AUTH ${v.allowInsecureAuth ? 'on' : 'off'}, legacy TLS ${v.allowLegacyTls ? 'on' : 'off'}`,
    );
    web.setFlash(request, { type: 'success', text: request.t('relay.saved') });
    return reply.redirect(RELAY_SETTINGS_PATH, 303);
  });

  const deviceForm = formBody({ username: text(), password: text(), allowedSenders: text(LIST_MAX), sendingAccountId: text(), cancel: button() });
  const DEVICES_AT = `${RELAY_SETTINGS_PATH}#device-accounts-heading`;
  app.post(`${RELAY_SETTINGS_PATH}/devices`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: deviceForm } }, async (request, reply) => {
    if (request.body.cancel) return reply.redirect(DEVICES_AT, 303);
    const username = request.body.username.trim();
    const { password, allowedSenders, sendingAccountId } = request.body;
    const errors: Record<string, string> = {};
    const account = await chosenAccount(sendingAccountId);
    if (!account.ok) errors.sendingAccountId = request.t('account.unknownChoice');
    const nameError = validateDeviceUsername(username);
    if (nameError) errors.username = nameError;
    else if (await deps.devices.exists(username)) errors.username = request.t('relay.deviceExists', { name: username });
    const passwordError = validateDevicePassword(password);
    if (passwordError) errors.password = passwordError;
    const senders = readAllowedSenders(allowedSenders);
    if (senders.error) errors.allowedSenders = senders.error;
    if (Object.keys(errors).length > 0 || !account.ok) {
      return reply.render('relay-device-add', await addPage(request, { username: username.slice(0, 200), allowedSenders, sendingAccountId: account.ok ? sendingAccountId : '', errors }), 400);
    }
    await deps.devices.create(username, password, senders.entries, account.id);
    await deps.audit.record(request.user!.username, 'relay-device.added', `${username}, ${sendersDetail(senders.entries)}${account.id ? `, sending account ${account.id}` : ''}`);
    web.setFlash(request, { type: 'success', text: request.t('relay.deviceAdded', { name: username }) });
    return reply.redirect(DEVICES_AT, 303);
  });

  const editPage = async (
    request: FastifyRequest,
    device: DeviceAccount,
    allowedSenders = device.allowedSenders.join('\n'),
    errors: Record<string, string> = {},
    sendingAccountId = device.sending_account_id ?? '',
  ) => ({
    title: request.t('relay.editDevice'),
    base: RELAY_SETTINGS_PATH,
    device,
    form: { allowedSenders, sendingAccountId },
    errors,
    ...(await accountsView(request.t)),
  });

  app.get(`${RELAY_SETTINGS_PATH}/devices/:id/edit`, { preValidation: web.requireSendSettings, schema: { params: idParams, querystring: none } }, async (request, reply) => {
    const { id } = request.params;
    const device = await deps.devices.find(id);
    if (!device) return reply.render('error', { title: request.t('error.notFound'), message: request.t('relay.deviceGone') }, 404);
    return reply.render('relay-device-edit', await editPage(request, device));
  });

  const editForm = formBody({ allowedSenders: text(LIST_MAX), sendingAccountId: text(), cancel: button() });
  app.post(`${RELAY_SETTINGS_PATH}/devices/:id/edit`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: idParams, body: editForm } }, async (request, reply) => {
    const { id } = request.params;
    if (request.body.cancel) return reply.redirect(RELAY_SETTINGS_PATH, 303);
    const device = await deps.devices.find(id);
    if (!device) {
      web.setFlash(request, { type: 'error', text: request.t('relay.deviceRemovedNothingChanged') });
      return reply.redirect(RELAY_SETTINGS_PATH, 303);
    }
    const { allowedSenders, sendingAccountId } = request.body;
    const senders = readAllowedSenders(allowedSenders);
    const account = await chosenAccount(sendingAccountId);
    if (senders.error || !account.ok) {
      const errors: Record<string, string> = {};
      if (senders.error) errors.allowedSenders = senders.error;
      if (!account.ok) errors.sendingAccountId = request.t('account.unknownChoice');
      return reply.render('relay-device-edit', await editPage(request, device, allowedSenders, errors, account.ok ? sendingAccountId : ''), 400);
    }
    await deps.devices.setAllowedSenders(id, senders.entries);
    await deps.devices.setSendingAccount(id, account.id);
    await deps.audit.record(request.user!.username, 'relay-device.changed', `${device.username}, ${sendersDetail(senders.entries)}${account.id || device.sending_account_id ? `, sending account ${account.id ?? 'the Default'}` : ''}`);
    web.setFlash(request, { type: 'success', text: request.t(senders.entries.length > 0 ? 'relay.deviceSavedListed' : 'relay.deviceSavedAny', { name: device.username }) });
    return reply.redirect(RELAY_SETTINGS_PATH, 303);
  });

  app.post(`${RELAY_SETTINGS_PATH}/devices/:id/remove`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { params: idParams, body: none } }, async (request, reply) => {
    const { id } = request.params;
    const removed = await deps.devices.remove(id);
    if (removed) {
      await deps.audit.record(request.user!.username, 'relay-device.removed', removed.username);
      web.setFlash(request, { type: 'success', text: request.t('relay.deviceRemoved', { name: removed.username }) });
    } else {
      web.setFlash(request, { type: 'error', text: request.t('relay.deviceAlreadyRemoved') });
    }
    return reply.redirect(RELAY_SETTINGS_PATH, 303);
  });

  const certificateForm = formBody({ certificate: text(PEM_MAX), privateKey: text(PEM_MAX) });
  app.post(`${RELAY_SETTINGS_PATH}/certificate`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: certificateForm } }, async (request, reply) => {
    const { certificate: cert, privateKey: key } = request.body;
    try {
      const stored = await deps.relaySettings.uploadCertificate(cert, key);
      await deps.audit.record(request.user!.username, 'relay-certificate.uploaded', `${stored.subject} ${stored.fingerprint256}`);
      web.setFlash(request, { type: 'success', text: request.t('cert.uploaded', { subject: stored.subject, date: stored.validTo.toISOString().slice(0, 10) }) });
      return reply.redirect(`${RELAY_SETTINGS_PATH}#relay-certificate-heading`, 303);
    } catch (error) {
      if (!isPosternError(error)) throw error;
      return reply.render('relay-certificate', await certificatePage(request, { cert, error: error.message }), 400);
    }
  });

  app.post(`${RELAY_SETTINGS_PATH}/certificate/generate`, { preValidation: [web.requireSendSettings, app.csrfProtection], schema: { body: none } }, async (request, reply) => {
    const stored = await deps.relaySettings.generateCertificate(deps.certificateNames());
    await deps.audit.record(request.user!.username, 'relay-certificate.generated', `${stored.subject} ${stored.fingerprint256}`);
    web.setFlash(request, { type: 'success', text: request.t('cert.generated', { names: stored.names.join(', ') }) });
    return reply.redirect(`${RELAY_SETTINGS_PATH}#relay-certificate-heading`, 303);
  });
};
