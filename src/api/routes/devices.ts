/** Relay device accounts (src/smtp-in/devices.ts), checked as the Relay Settings page checks them. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ErrorCodes } from '../../errors.js';
import { parseAllowedSenders } from '../../smtp-in/allowed-senders.js';
import { validateDevicePassword, validateDeviceUsername, type DeviceAccount } from '../../smtp-in/devices.js';
import { generatePassword } from '../../store/passwords.js';
import { ApiError, AUTH_ERRORS, auditChange, BODY_LIMIT, INPUT_ERRORS, type ApiDependencies } from '../common.js';
import { Device, deviceShape, ErrorBody } from '../shapes.js';

const DeviceName = z.object({ name: z.string().max(200).describe('The device account\'s User Name') });

/** Allowed Sender Addresses as the Relay Settings page reads them, with its wording. */
function readAllowedSenders(list: string[]): { entries: string[]; error?: string } {
  const parsed = parseAllowedSenders(list.join('\n'));
  if (parsed.errors.length === 0) return { entries: parsed.entries };
  const more = parsed.errors.length > 5 ? ` (and ${parsed.errors.length - 5} more)` : '';
  return { entries: [], error: `${parsed.errors.slice(0, 5).join('; ')}${more}. Give each entry as an address (scanner@example.com) or @domain (@example.com).` };
}

const sendersDetail = (entries: string[]) => (entries.length > 0 ? `allowed senders [${entries.join(' ')}]` : 'any sender');

export const deviceRoutes: FastifyPluginAsyncZod<ApiDependencies> = async (app, deps) => {
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
      await auditChange(deps.audit, request, 'relay-device.added', `${username}, ${sendersDetail(senders.entries)}`);
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
        await auditChange(deps.audit, request, 'relay-device.changed', `${device.username}, ${sendersDetail(senders.entries)}`);
      }
      if (request.body.password !== undefined) {
        await deps.devices.setPassword(device.id, request.body.password);
        await auditChange(deps.audit, request, 'relay-device.password_changed', device.username);
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
      await auditChange(deps.audit, request, 'relay-device.removed', removed.username);
      return { removed: deviceShape(removed) };
    },
  );
};
