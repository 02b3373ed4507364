"""Texts for people, in French (default) and English (R22).

The one catalogue of every text the server writes for people: errors, system
messages, notifications and their e-mails, the labels of the archive's HTML
export.  Each is looked up by a stable code (:func:`text`; :func:`error_text`,
:func:`system_text` and :func:`notification_text` add each section's rule for
an unknown code or for both languages at once); an error's code travels to
clients with the text so that a client can act on the code and show the text.
``tests/test_i18n.py`` checks that every code has both texts and that every
code raised in the package is in the catalogue.
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"  # R22: French is the default

ERRORS: dict[str, tuple[str, str]] = {
    # code: (français, English)
    "error": ("Une erreur est survenue.", "An error occurred."),
    "internal.error": (
        "Erreur interne du serveur; votre action n'a pas été enregistrée. Réessayez.",
        "Internal server error; your action was not saved. Please try again.",
    ),
    # --- malformed input ---------------------------------------------------
    "request.invalid": ("Requête invalide : {detail}.", "Invalid request: {detail}."),
    "request.invalid_json": (
        "Le message reçu n'est pas du JSON valide ({detail}).",
        "The frame received is not valid JSON ({detail}).",
    ),
    "request.not_object": (
        "Un objet JSON était attendu, mais le message reçu est de type {got}.",
        "Expected a JSON object, but the frame is of type {got}.",
    ),
    "request.unknown_type": (
        "Type de message inconnu : « {type} ». Consultez docs/protocol.md.",
        "Unknown frame type: '{type}'. See docs/protocol.md.",
    ),
    "request.missing_field": (
        "Le champ « {field} » est obligatoire.",
        "The field '{field}' is required.",
    ),
    "request.wrong_type": (
        "Le champ « {field} » doit être de type {expected}, mais {got} a été reçu.",
        "The field '{field}' must be {expected}, but got {got}.",
    ),
    "request.too_large": (
        "Le message reçu fait {size} octets; la limite est de {limit} octets.",
        "The frame is {size} bytes; the limit is {limit} bytes.",
    ),
    "request.binary_unsupported": (
        "Les messages binaires ne sont pas acceptés; envoyez du texte JSON.",
        "Binary frames are not accepted; send JSON text.",
    ),
    "text.control_characters": (
        "Le champ « {field} » contient un caractère de contrôle ({character}); seuls la tabulation, "
        "le saut de ligne et le retour chariot sont acceptés.",
        "The field '{field}' contains a control character ({character}); only tab, line feed and "
        "carriage return are accepted.",
    ),
    "rate_limited": (
        "Trop de requêtes. Réessayez dans {retry_after} s.",
        "Too many requests. Retry in {retry_after} s.",
    ),
    "service.unavailable": (
        "Le service est momentanément indisponible. Réessayez dans {retry_after} s.",
        "The service is temporarily unavailable. Retry in {retry_after} s.",
    ),
    # --- authentication (R21) ---------------------------------------------
    "auth.missing_token": (
        "Authentification requise : aucun jeton fourni.",
        "Authentication required: no token was given.",
    ),
    "auth.invalid_token": (
        "Le jeton d'accès est invalide.",
        "The access token is invalid.",
    ),
    "auth.expired_token": (
        "Votre session a expiré; reconnectez-vous.",
        "Your session has expired; please sign in again.",
    ),
    "auth.revoked_token": (
        "Cette session a été fermée (déconnexion); reconnectez-vous.",
        "This session was ended (signed out); please sign in again.",
    ),
    "auth.unknown_person": (
        "Aucune personne ne correspond à ce jeton dans l'annuaire.",
        "No person in the directory matches this token.",
    ),
    # --- accounts (R19–R21) -------------------------------------------------
    "auth.invalid_credentials": (
        "Courriel ou mot de passe incorrect (ou compte pas encore activé : créez votre mot de passe).",
        "Wrong e-mail or password (or the account is not activated yet: create your password).",
    ),
    "auth.invalid_code": (
        "Ce code n'est pas valide : il est erroné, expiré, déjà utilisé ou remplacé par un plus récent. "
        "Demandez-en un nouveau au besoin.",
        "This code is not valid: it is wrong, expired, already used or replaced by a newer one. "
        "Ask for a new one if needed.",
    ),
    "auth.invalid_refresh": (
        "Cette session n'est plus valide; reconnectez-vous.",
        "This session is no longer valid; please sign in again.",
    ),
    "auth.throttled": (
        "Trop de tentatives. Réessayez dans {retry_after} s.",
        "Too many attempts. Try again in {retry_after} s.",
    ),
    "auth.session_not_found": (
        "Aucune session active ne porte ce numéro.",
        "No active session has this id.",
    ),
    "password.too_short": (
        "Le mot de passe doit compter au moins 8 caractères.",
        "The password must be at least 8 characters long.",
    ),
    "password.too_long": (
        "Le mot de passe doit compter au plus 256 caractères.",
        "The password must be at most 256 characters long.",
    ),
    "password.no_upper": (
        "Le mot de passe doit contenir une lettre majuscule.",
        "The password must contain an upper-case letter.",
    ),
    "password.no_lower": (
        "Le mot de passe doit contenir une lettre minuscule.",
        "The password must contain a lower-case letter.",
    ),
    "password.no_digit_or_symbol": (
        "Le mot de passe doit contenir un chiffre ou un symbole.",
        "The password must contain a digit or a symbol.",
    ),
    "password.too_common": (
        "Ce mot de passe est trop courant; choisissez-en un moins prévisible.",
        "This password is too common; choose a less predictable one.",
    ),
    "child.no_match": (
        "Aucun enfant ne correspond à ces renseignements pour votre courriel. Vérifiez l'organisation, "
        "le nom, la date de naissance et le numéro tels qu'ils figurent au dossier, ou le NIP reçu de l'école.",
        "No child matches these details for your e-mail. Check the organisation, the name, the date of "
        "birth and the number exactly as on file, or the PIN the school gave you.",
    ),
    "child.one_number": (
        "Donnez soit le numéro de fiche (7 chiffres), soit le code permanent (12 caractères), soit le NIP.",
        "Give either the fiche number (7 digits), the permanent code (12 characters) or the PIN.",
    ),
    "forbidden": (
        "Cette action n'est pas permise pour votre rôle.",
        "This action is not allowed for your role.",
    ),
    "origin.forbidden": (
        "Origine « {origin} » non autorisée.",
        "Origin '{origin}' is not allowed.",
    ),
    # --- directory ---------------------------------------------------------
    "person.not_found": ("Personne introuvable : {person_id}.", "Person not found: {person_id}."),
    "child.not_found": ("Enfant introuvable : {child_id}.", "Child not found: {child_id}."),
    "directory.invalid": (
        "Annuaire invalide ({where}) : {problem}. Rien n'a été chargé.",
        "Invalid directory ({where}): {problem}. Nothing was loaded.",
    ),
    # --- conversations (R1–R5) ---------------------------------------------
    "conversation.not_found": (
        "Conversation introuvable ou inaccessible : {conversation_id}.",
        "Conversation not found or not accessible: {conversation_id}.",
    ),
    "conversation.no_staff": (
        "Une conversation doit toujours compter au moins un membre du personnel de l'école.",
        "A conversation must always include at least one school staff member.",
    ),
    "conversation.child_required": (
        "Choisissez l'enfant pour lequel vous écrivez (champ « child_id »).",
        "Choose the child you are writing for (field 'child_id').",
    ),
    "conversation.child_not_yours": (
        "Vous n'êtes pas tuteur de cet enfant.",
        "You are not a guardian of this child.",
    ),
    "conversation.invitee_not_allowed": (
        "Vous ne pouvez pas inviter cette personne ({person_id}) : seuls le personnel qui travaille avec l'enfant et ses autres parents peuvent l'être.",
        "You cannot invite this person ({person_id}): only staff who work with the child and the child's other guardians can be invited.",
    ),
    "conversation.too_many_participants": (
        "Une conversation compte au plus {limit} participants.",
        "A conversation has at most {limit} participants.",
    ),
    "conversation.no_participants": (
        "Invitez au moins une autre personne.",
        "Invite at least one other person.",
    ),
    "conversation.name_too_long": (
        "Le nom de la conversation dépasse {limit} caractères.",
        "The conversation name is longer than {limit} characters.",
    ),
    "conversation.already_member": (
        "Cette personne fait déjà partie de la conversation ({person_id}).",
        "This person is already in the conversation ({person_id}).",
    ),
    "conversation.not_participant": (
        "Cette personne ne fait pas partie de la conversation ({person_id}).",
        "This person is not in the conversation ({person_id}).",
    ),
    "conversation.not_creator": (
        "Seule la personne qui a créé la conversation peut en retirer des participants.",
        "Only the person who created the conversation can remove participants.",
    ),
    "conversation.use_leave": (
        "Pour vous retirer vous-même, quittez la conversation.",
        "To remove yourself, leave the conversation.",
    ),
    # --- messages (R6, R8) -------------------------------------------------
    "message.not_found": ("Message introuvable : {message_id}.", "Message not found: {message_id}."),
    "message.text_empty": ("Le message est vide.", "The message is empty."),
    "message.text_too_long": (
        "Le message fait {length} caractères; la limite est de {limit}.",
        "The message is {length} characters long; the limit is {limit}.",
    ),
    "message.not_author": (
        "Seul l'auteur d'un message peut le modifier ou le retirer.",
        "Only the author of a message can edit or retract it.",
    ),
    "message.retracted": (
        "Ce message a été retiré de la conversation.",
        "This message was removed from the conversation.",
    ),
    "message.client_id_invalid": (
        "L'identifiant client du message doit faire de 1 à {limit} caractères.",
        "The message client id must be 1 to {limit} characters long.",
    ),
    "message.client_id_reused": (
        "Cet identifiant client a déjà servi pour un autre message.",
        "This client id was already used for another message.",
    ),
    # --- school side (R9–R14, R18) --------------------------------------------
    "feature.unavailable": (
        "Cette fonctionnalité n'est pas offerte par l'école ({feature}).",
        "This feature is not available at this school ({feature}).",
    ),
    "conversation.locked": (
        "La direction a verrouillé cette conversation; personne ne peut y écrire pour l'instant.",
        "The principal has locked this conversation; no one can write in it for now.",
    ),
    "conversation.not_locked": ("Cette conversation n'est pas verrouillée.", "This conversation is not locked."),
    "direction.only": (
        "Réservé à la direction de l'école de cette conversation.",
        "Reserved for the principal of this conversation's school.",
    ),
    "announcement.not_allowed": (
        "Vous ne pouvez pas publier d'annonce pour ce public.",
        "You cannot post an announcement to this audience.",
    ),
    "announcement.audience_invalid": (
        "Public d'annonce invalide : indiquez « groups », « school » ou « organisation ».",
        "Invalid announcement audience: give 'groups', 'school' or 'organisation'.",
    ),
    "announcement.not_found": ("Annonce introuvable : {announcement_id}.", "Announcement not found: {announcement_id}."),
    "announcement.no_replies": (
        "On ne répond pas à une annonce; écrivez plutôt à l'enseignant dans la messagerie.",
        "Announcements cannot be replied to; write to the teacher in a conversation instead.",
    ),
    "collective.not_allowed": (
        "Vous ne pouvez pas écrire à ces familles ({student_id}).",
        "You cannot write to these families ({student_id}).",
    ),
    "collective.not_found": ("Envoi collectif introuvable : {send_id}.", "Collective send not found: {send_id}."),
    "integration.invalid_key": (
        "Clé d'intégration invalide ou révoquée.",
        "Invalid or revoked integration key.",
    ),
    "integration.kind_not_allowed": (
        "Cette clé ne peut pas publier d'avis de type « {kind} ».",
        "This key cannot post notices of kind '{kind}'.",
    ),
    "integration.student_not_found": (
        "Élève introuvable dans l'école de cette clé : {fiche}.",
        "Student not found in this key's school: {fiche}.",
    ),
    "demo.off": ("Le mode démo n'est pas activé sur ce serveur.", "Demo mode is not enabled on this server."),
    "notification.not_found": ("Notification introuvable : {notification_id}.",
                               "Notification not found: {notification_id}."),
    "notification.unknown_kind": ("Type de notification inconnu « {kind} » (types : {kinds}).",
                                  "Unknown notification kind '{kind}' (kinds: {kinds})."),
    # --- attachments (R7) --------------------------------------------------
    "attachment.too_many": (
        "Un message compte au plus {limit} pièces jointes ({count} reçues).",
        "A message has at most {limit} attachments ({count} given).",
    ),
    "attachment.empty": ("Le fichier est vide.", "The file is empty."),
    "attachment.too_large": (
        "Le fichier dépasse la limite de {limit_mb} Mo par fichier.",
        "The file is larger than the {limit_mb} MB limit per file.",
    ),
    "attachment.legacy_doc": (
        "Les documents Word anciens (.doc) ne sont pas acceptés; enregistrez-le en DOCX ou en PDF.",
        "Legacy Word documents (.doc) are not accepted; save it as DOCX or PDF.",
    ),
    "attachment.type_not_allowed": (
        "Type de fichier non accepté ({detected}). Types acceptés : JPG, PNG, DOCX et PDF.",
        "File type not accepted ({detected}). Accepted types: JPG, PNG, DOCX and PDF.",
    ),
    "attachment.zip_bomb": (
        "Ce document est anormalement compressé et a été refusé ({reason}).",
        "This document is abnormally compressed and was refused ({reason}).",
    ),
    "attachment.unsafe_archive": (
        "Ce document contient des chemins de fichiers dangereux et a été refusé.",
        "This document contains unsafe file paths and was refused.",
    ),
    "attachment.macro": (
        "Les documents contenant des macros ne sont pas acceptés; enregistrez-le en DOCX sans macros ou en PDF.",
        "Documents with macros are not accepted; save it as a DOCX without macros or as PDF.",
    ),
    "attachment.pdf_active_content": (
        "Ce PDF contient du contenu actif ({names}) et a été refusé; imprimez-le en PDF simple.",
        "This PDF contains active content ({names}) and was refused; print it to a plain PDF.",
    ),
    "attachment.bad_image": (
        "L'image est endommagée ou illisible.",
        "The image is damaged or unreadable.",
    ),
    "attachment.not_found": (
        "Pièce jointe introuvable ou inaccessible : {upload_id}.",
        "Attachment not found or not accessible: {upload_id}.",
    ),
    "attachment.already_used": (
        "Cette pièce jointe est déjà jointe à un autre message : {upload_id}.",
        "This attachment is already attached to another message: {upload_id}.",
    ),
    "reaction.invalid_emoji": (
        "Réaction invalide : un seul émoji est attendu.",
        "Invalid reaction: a single emoji is expected.",
    ),
    "read.invalid_seq": (
        "Position de lecture invalide : {seq} (dernière position : {last_seq}).",
        "Invalid read position: {seq} (last position: {last_seq}).",
    ),
    # --- archive (R9) ------------------------------------------------------
    "school.not_found": ("École introuvable : {school_id}.", "School not found: {school_id}."),
    "request.invalid_choice": (
        "Le paramètre « {field} » doit valoir {expected}, mais « {got} » a été reçu.",
        "The parameter '{field}' must be {expected}, but got '{got}'.",
    ),
}

# System messages written into conversations (R4).  An event is encoded once
# for every member, so it carries the text in both languages ({"fr", "en"}) and
# each client shows the one its person reads.
SYSTEM: dict[str, tuple[str, str]] = {
    "system.created": ("{actor} a créé la conversation.", "{actor} created the conversation."),
    "system.added_with_history": (
        "{actor} a ajouté {names}; l'historique de la conversation a été partagé.",
        "{actor} added {names}; the conversation history was shared.",
    ),
    "system.added_without_history": (
        "{actor} a ajouté {names}, sans l'historique de la conversation.",
        "{actor} added {names}, without the conversation history.",
    ),
    "system.removed": ("{actor} a retiré {names} de la conversation.", "{actor} removed {names} from the conversation."),
    "system.left": ("{actor} a quitté la conversation.", "{actor} left the conversation."),
    "system.renamed": ("{actor} a renommé la conversation « {name} ».", "{actor} renamed the conversation '{name}'."),
    "system.retracted": ("Message retiré", "Message removed"),
    "system.locked": ("{actor} (direction) a verrouillé la conversation.", "{actor} (principal) locked the conversation."),
    "system.unlocked": ("{actor} (direction) a déverrouillé la conversation.",
                        "{actor} (principal) unlocked the conversation."),
}


# Notifications (R16) and their e-mails (R15), rendered in the reader's language.
NOTIFICATIONS: dict[str, tuple[str, str]] = {
    "notify.message": ("{sender} vous a écrit ({conversation}).", "{sender} wrote to you ({conversation})."),
    "notify.added": ("{sender} vous a ajouté à une conversation ({conversation}).",
                     "{sender} added you to a conversation ({conversation})."),
    "notify.message_plain": ("{sender} vous a écrit.", "{sender} wrote to you."),
    "notify.added_plain": ("{sender} vous a ajouté à une conversation.", "{sender} added you to a conversation."),
    "notify.reaction_plain": ("{sender} a réagi {emoji} à votre message.", "{sender} reacted {emoji} to your message."),
    "notify.announcement": ("Annonce de {sender}.", "Announcement from {sender}."),
    "notify.reaction": ("{sender} a réagi {emoji} à votre message.", "{sender} reacted {emoji} to your message."),
    "notify.transport": ("Avis du transporteur scolaire ({sender}).", "Notice from the school bus company ({sender})."),
    "notify.observation": ("Nouvelle observation au sujet de votre enfant ({sender}).",
                           "New observation about your child ({sender})."),
    "notify.absence": ("Avis d'absence ({sender}).", "Absence notice ({sender})."),
    "mail.subject": ("Clic : {count} notification(s) non lue(s)", "Clic: {count} unread notification(s)"),
    "mail.digest_subject": ("Clic : {count} notification(s) pendant votre absence",
                            "Clic: {count} notification(s) while you were away"),
    "mail.code_subject.signup": ("Clic : votre code pour activer votre compte", "Clic: your code to activate your account"),
    "mail.code_subject.signin": ("Clic : votre code de connexion", "Clic: your sign-in code"),
    "mail.code_subject.reset": ("Clic : votre code pour changer de mot de passe", "Clic: your code to change your password"),
    "mail.code_body": (
        "Votre code est {code}. Il est valide {minutes} minutes et une seule fois.",
        "Your code is {code}. It is valid for {minutes} minutes, once.",
    ),
    "mail.code_not_you": (
        "Si vous n'avez rien demandé, ignorez ce courriel : personne ne peut entrer sans ce code.",
        "If you did not ask for anything, ignore this e-mail: nobody can get in without this code.",
    ),
    "mail.already_active_subject": ("Clic : vous avez déjà un compte", "Clic: you already have an account"),
    "mail.already_active_body": (
        "Quelqu'un (vous, sans doute) a voulu créer un compte avec ce courriel, qui en a déjà un. "
        "Connectez-vous, ou utilisez « Mot de passe oublié » : {url}",
        "Someone (you, most likely) tried to create an account with this e-mail, which already has one. "
        "Sign in, or use \"Forgotten password\": {url}",
    ),
    "mail.greeting": ("Bonjour {name},", "Hello {name},"),
    "mail.digest_intro": ("Voici ce qui vous attendait depuis la fin de vos heures de travail ({count}) :",
                          "Here is what waited since the end of your working hours ({count}):"),
    "mail.open_app": ("Ouvrez la messagerie pour lire et répondre : {url}", "Open the messaging to read and answer: {url}"),
    "mail.footer": ("Ce courriel ne contient aucun message : le contenu reste dans l'application.",
                    "This e-mail contains no message text: the content stays in the app."),
}


# The archive's HTML export (R9): a document for people, in French by default and
# in English for a reader who chose it (R22).
ARCHIVE: dict[str, tuple[str, str]] = {
    "archive.title": ("Archive de la conversation", "Conversation archive"),
    "archive.school": ("École", "School"),
    "archive.child": ("Enfant", "Child"),
    "archive.conversation": ("Conversation", "Conversation"),
    "archive.number": ("n° {id}", "no. {id}"),
    "archive.created": ("Créée le", "Created on"),
    "archive.status": ("État", "Status"),
    "archive.open": ("Ouverte", "Open"),
    "archive.locked": ("Verrouillée le {at} par {name}", "Locked on {at} by {name}"),
    "archive.reason": ("Motif", "Reason"),
    "archive.exported": ("Exportée le", "Exported on"),
    "archive.by": ("par", "by"),
    "archive.participants": ("Participants", "Participants"),
    "archive.name": ("Nom", "Name"),
    "archive.role": ("Rôle", "Role"),
    "archive.joined": ("Arrivée", "Joined"),
    "archive.left": ("Départ", "Left"),
    "archive.present": ("toujours membre", "still a member"),
    "archive.timeline": ("Fil de la conversation", "Conversation thread"),
    "archive.seq": ("N°", "No."),
    "archive.date": ("Date", "Date"),
    "archive.author": ("Auteur", "Author"),
    "archive.content": ("Contenu", "Content"),
    "archive.system": ("Système", "System"),
    "archive.retracted": ("Message retiré", "Message removed"),
    "archive.retracted_at": ("retiré le {at}", "removed on {at}"),
    "archive.edited": ("Modifié le {at}", "Edited on {at}"),
    "archive.earlier_versions": ("Versions antérieures", "Earlier versions"),
    "archive.version": ("Version {version}, {at}", "Version {version}, {at}"),
    "archive.attachments": ("Pièces jointes", "Attachments"),
    "archive.reactions": ("Réactions", "Reactions"),
    "archive.empty": ("Aucun message.", "No messages."),
    "archive.lock_event": ("{name} a verrouillé la conversation.", "{name} locked the conversation."),
    "archive.unlock_event": ("{name} a déverrouillé la conversation.", "{name} unlocked the conversation."),
    "archive.unknown_person": ("(personne inconnue)", "(unknown person)"),
    "archive.role.parent": ("parent", "parent"),
    "archive.role.teacher": ("enseignant", "teacher"),
    "archive.role.staff": ("personnel", "staff"),
    "archive.role.direction": ("direction", "principal"),
    "archive.role.transport": ("transport", "transport"),
}

# Every text the server writes, by its code: the sections above are disjoint
# (tests/test_i18n.py checks it), so a code names one text.
CATALOGUE: dict[str, tuple[str, str]] = {**ERRORS, **SYSTEM, **NOTIFICATIONS, **ARCHIVE}


def template(code: str, language: str = DEFAULT_LANGUAGE) -> str:
    """The text of ``code`` in ``language`` (French unless 'en') with its ``{fields}``
    unfilled, for a caller that fills them with markup (the archive's HTML export).
    An unknown code is a programming error: KeyError."""
    fr, en = CATALOGUE[code]
    return en if language == "en" else fr


def text(code: str, language: str = DEFAULT_LANGUAGE, fields: dict[str, Any] | None = None) -> str:
    """The text of ``code`` in ``language`` (French unless 'en'), its ``{fields}`` filled;
    a field not given keeps its placeholder.  An unknown code is a KeyError."""
    return template(code, language).format_map(_Missing(fields or {}))


def notification_text(code: str, language: str = DEFAULT_LANGUAGE, fields: dict[str, Any] | None = None) -> str:
    return _pick(NOTIFICATIONS, code, language).format_map(_Missing(fields or {}))


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _pick(catalogue: dict[str, tuple[str, str]], code: str, language: str) -> str:
    pair = catalogue.get(code) or catalogue.get("error") or ("", "")
    return pair[1] if language == "en" else pair[0]


def error_text(code: str, language: str = DEFAULT_LANGUAGE, fields: dict[str, Any] | None = None) -> str:
    """The human text of an error code in ``language`` (French unless 'en')."""
    return _pick(ERRORS, code, language).format_map(_Missing(fields or {}))


def system_text(code: str, fields: dict[str, Any] | None = None) -> dict[str, str]:
    """A system message's text in both languages (events are encoded once for all)."""
    values = _Missing(fields or {})
    fr, en = SYSTEM[code]
    return {"fr": fr.format_map(values), "en": en.format_map(values)}


def normalise_language(value: str | None) -> str:
    """Map any language tag to one we have ('en-CA' → 'en'); French otherwise."""
    if value and value[:2].lower() == "en":
        return "en"
    return DEFAULT_LANGUAGE
