-- Which users may launch which stacks from the portal (AppStream's user-stack associations).
CREATE TABLE user_stack_associations (
    stack TEXT NOT NULL,
    user_name TEXT NOT NULL,
    authentication_type TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (stack, user_name, authentication_type)
);
