/** User management (Administrator only) and changing one's own password (everyone). */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Role } from '../../store/schema.js';
import { ROLES, ROLE_LABELS, validateNewPassword, validateUsername } from '../../store/users.js';
import type { WebPluginOptions } from '../context.js';
import { formBody, idParams, none, text } from '../form.js';

const BASE = '/settings/users';

export const userRoutes: FastifyPluginAsyncZod<WebPluginOptions> = async (app, { web }) => {
  const page = async (request: FastifyRequest, extra: Record<string, unknown> = {}) => ({
    title: request.t('menu.users'),
    users: await web.users.list(),
    roles: ROLES,
    roleName: (role: Role) => request.t(`role.${role}`),
    form: { username: '', role: 'GeneralUser' },
    errors: {},
    base: BASE,
    ...extra,
  });

  app.get(BASE, { preValidation: web.requireUserManagement, schema: { querystring: none } }, async (request, reply) => reply.render('users', await page(request)));

  // The role is a select: a value that is not a role gets the form's own message.
  const addForm = formBody({ username: text(), password: text(), role: text() });

  app.post(`${BASE}/add`, { preValidation: [web.requireUserManagement, app.csrfProtection], schema: { body: addForm } }, async (request, reply) => {
    const username = request.body.username.trim();
    const { password } = request.body;
    const role = ROLES.find((r) => r === request.body.role);
    const errors: Record<string, string> = {};
    const nameError = validateUsername(username);
    if (nameError) errors.username = nameError;
    else if (await web.users.exists(username)) errors.username = request.t('users.exists', { name: username });
    const passwordError = validateNewPassword(password);
    if (passwordError) errors.password = passwordError;
    if (!role) errors.role = request.t('users.chooseRole');
    if (!role || Object.keys(errors).length > 0) {
      return reply.render('users', await page(request, { form: { username, role: request.body.role }, errors }), 400);
    }
    await web.users.create(username, password, role);
    await web.audit.record(request.user!.username, 'user.added', `${username} (${ROLE_LABELS[role]})`);
    web.setFlash(request, { type: 'success', text: request.t('users.added', { name: username, role: request.t(`role.${role}`) }) });
    return reply.redirect(BASE, 303);
  });

  app.post(`${BASE}/:id/remove`, { preValidation: [web.requireUserManagement, app.csrfProtection], schema: { params: idParams, body: none } }, async (request, reply) => {
    const { id } = request.params;
    const user = await web.users.findById(id);
    if (!user) return reply.redirect(BASE, 303);
    if (user.id === request.user!.id) {
      web.setFlash(request, { type: 'error', text: request.t('users.cannotRemoveSelf') });
      return reply.redirect(BASE, 303);
    }
    if (user.role === 'Administrator' && (await web.users.countAdministrators()) <= 1) {
      web.setFlash(request, { type: 'error', text: request.t('users.lastAdministrator') });
      return reply.redirect(BASE, 303);
    }
    // Removing the user also ends their sessions.
    await web.users.remove(id);
    await web.audit.record(request.user!.username, 'user.removed', user.username);
    web.setFlash(request, { type: 'success', text: request.t('users.removed', { name: user.username }) });
    return reply.redirect(BASE, 303);
  });

  app.get('/settings/password', { preValidation: web.requireLogin, schema: { querystring: none } }, async (request, reply) =>
    reply.render('password', { title: request.t('password.title'), errors: {} }),
  );

  const passwordForm = formBody({ current: text(), password: text(), confirm: text() });
  app.post('/settings/password', { preValidation: [web.requireLogin, app.csrfProtection], schema: { body: passwordForm } }, async (request, reply) => {
    const { current, password, confirm } = request.body;
    const errors: Record<string, string> = {};
    if (!(await web.users.authenticate(request.user!.username, current))) errors.current = request.t('password.incorrect');
    const passwordError = validateNewPassword(password);
    if (passwordError) errors.password = passwordError;
    else if (password !== confirm) errors.confirm = request.t('password.differ');
    if (Object.keys(errors).length > 0) return reply.render('password', { title: request.t('password.title'), errors }, 400);
    // The user's other sessions end (a session elsewhere may be the reason for the change); this one stays.
    request.session.loginAt = await web.users.setPassword(request.user!.id, password, { keepSession: request.session.sessionId });
    await web.audit.record(request.user!.username, 'user.password_changed');
    web.setFlash(request, { type: 'success', text: request.t('password.changed') });
    return reply.redirect('/', 303);
  });
};
