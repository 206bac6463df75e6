/** User management (Administrator only) and changing one's own password (everyone). */
import type { FastifyInstance } from 'fastify';
import type { Role } from '../../store/schema.js';
import { ROLES, ROLE_LABELS, validateNewPassword, validateUsername } from '../../store/users.js';
import { text, type WebContext } from '../app.js';

const BASE = '/settings/users';

export function registerUserRoutes(app: FastifyInstance, web: WebContext): void {
  const page = async (extra: Record<string, unknown> = {}) => ({
    title: 'User Management',
    users: await web.users.list(),
    roles: ROLES.map((role) => ({ value: role, label: ROLE_LABELS[role] })),
    roleLabels: ROLE_LABELS,
    form: { username: '', role: 'GeneralUser' },
    errors: {},
    base: BASE,
    ...extra,
  });

  app.get(BASE, { preHandler: web.requireUserManagement }, async (_request, reply) => reply.render('users', await page()));

  app.post(`${BASE}/add`, { preHandler: [web.requireUserManagement, app.csrfProtection] }, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const username = text(body, 'username').trim();
    const password = text(body, 'password');
    const role = text(body, 'role') as Role;
    const errors: Record<string, string> = {};
    const nameError = validateUsername(username);
    if (nameError) errors.username = nameError;
    else if (await web.users.exists(username)) errors.username = `A user named ${username} already exists.`;
    const passwordError = validateNewPassword(password);
    if (passwordError) errors.password = passwordError;
    if (!ROLES.includes(role)) errors.role = 'Choose a role.';
    if (Object.keys(errors).length > 0) {
      return reply.render('users', await page({ form: { username, role }, errors }), 400);
    }
    await web.users.create(username, password, role);
    await web.audit.record(request.user!.username, 'user.added', `${username} (${ROLE_LABELS[role]})`);
    web.setFlash(request, { type: 'success', text: `Added ${username} as ${ROLE_LABELS[role]}.` });
    return reply.redirect(BASE, 303);
  });

  app.post(`${BASE}/:id/remove`, { preHandler: [web.requireUserManagement, app.csrfProtection] }, async (request, reply) => {
    const { id } = request.params as { id: string };
    const user = await web.users.findById(id);
    if (!user) return reply.redirect(BASE, 303);
    if (user.id === request.user!.id) {
      web.setFlash(request, { type: 'error', text: 'You cannot remove the account you are logged in with.' });
      return reply.redirect(BASE, 303);
    }
    if (user.role === 'Administrator' && (await web.users.countAdministrators()) <= 1) {
      web.setFlash(request, { type: 'error', text: 'The last Administrator cannot be removed.' });
      return reply.redirect(BASE, 303);
    }
    // Removing the user also ends their sessions.
    await web.users.remove(id);
    await web.audit.record(request.user!.username, 'user.removed', user.username);
    web.setFlash(request, { type: 'success', text: `Removed ${user.username}.` });
    return reply.redirect(BASE, 303);
  });

  app.get('/settings/password', { preHandler: web.requireLogin }, async (_request, reply) =>
    reply.render('password', { title: 'Change Password', errors: {} }),
  );

  app.post('/settings/password', { preHandler: [web.requireLogin, app.csrfProtection] }, async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const current = text(body, 'current');
    const password = text(body, 'password');
    const confirm = text(body, 'confirm');
    const errors: Record<string, string> = {};
    if (!(await web.users.authenticate(request.user!.username, current))) errors.current = 'The current password is incorrect.';
    const passwordError = validateNewPassword(password);
    if (passwordError) errors.password = passwordError;
    else if (password !== confirm) errors.confirm = 'The two new passwords differ.';
    if (Object.keys(errors).length > 0) return reply.render('password', { title: 'Change Password', errors }, 400);
    // The user's other sessions end (a session elsewhere may be the reason for the change); this one stays.
    request.session.loginAt = await web.users.setPassword(request.user!.id, password, { keepSession: request.session.sessionId });
    await web.audit.record(request.user!.username, 'user.password_changed');
    web.setFlash(request, { type: 'success', text: 'Your password was changed. You were logged out everywhere else.' });
    return reply.redirect('/', 303);
  });
}
