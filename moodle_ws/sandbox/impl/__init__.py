"""Function implementations, by registered name (companion ones by short name).

Each takes the `Call` first, then the validated parameters as keyword arguments, and
returns plain Python data that dispatch cleans against the declared return structure.
"""

from moodle_ws.sandbox.impl import (
    companion,
    completion,
    contents,
    course,
    enrol,
    iomad,
    licenses,
    message,
    mobile,
    user_write,
    users,
    webservice,
)

CORE = {
    "core_webservice_get_site_info": webservice.get_site_info,
    "core_enrol_get_enrolled_users": enrol.get_enrolled_users,
    "core_user_get_users": users.get_users,
    "core_user_get_users_by_field": users.get_users_by_field,
    "core_user_update_users": user_write.update_users,
    "core_user_create_users": user_write.create_users,
    "core_completion_get_course_completion_status": completion.get_course_completion_status,
    "core_completion_get_activities_completion_status": completion.get_activities_completion_status,
    "core_course_get_courses": course.get_courses,
    "core_course_get_courses_by_field": course.get_courses_by_field,
    "core_course_get_contents": contents.get_course_contents,
    "core_message_send_instant_messages": message.send_instant_messages,
    "tool_mobile_call_external_functions": mobile.call_external_functions,
}

IOMAD = {
    "block_iomad_company_admin_get_companies": iomad.get_companies,
    "block_iomad_company_admin_get_departments": iomad.get_departments,
    "block_iomad_company_admin_get_department_users": iomad.get_department_users,
    "block_iomad_company_admin_get_user_companies": iomad.get_user_companies,
    "block_iomad_company_admin_assign_users": iomad.assign_users,
    "block_iomad_company_admin_get_license_info": licenses.get_license_info,
    "block_iomad_company_admin_get_license_from_id": licenses.get_license_from_id,
    "block_iomad_company_admin_allocate_licenses": licenses.allocate_licenses,
    "block_iomad_company_admin_unallocate_licenses": licenses.unallocate_licenses,
    "block_iomad_company_admin_check_enrolment": iomad.check_enrolment,
    "local_iomad_licenserevoke_user_course": iomad.licenserevoke_user_course,
    "local_iomad_restrict_email_template": iomad.restrict_email_template,
}

COMPANION = {
    "get_schedules": companion.get_schedules,
    "get_cloud_settings": companion.get_cloud_settings,
    "get_course_completions": companion.get_course_completions,
    "record_certificate": companion.record_certificate,
    "get_license_allocations": companion.get_license_allocations,
    "get_new_users": companion.get_new_users,
}
